"""Domain-shift label efficiency: how many labelled pixels of a new scan each arm needs.

A model trained on earlier scans (the *sources*) meets a new one (the *target*: another
volume, imaged differently) and is wrong in places. Per seed, the *sources-only* model is
trained on the sources (early stopping on the sources' val split); the *initial* model every
arm starts from is that model fine-tuned once more on the sources, as a round fine-tunes,
with early stopping on the target's val split (:func:`initial_model`): the rounds select
their models on the target's val labels, and what that selection alone buys is not
credited to any arm's labels. Each arm then runs ``rounds`` rounds on the target's training
pool: score the unlabelled units (whole z slices or square regions of them) with the
current model, let its strategy choose units for the round's labelled pixels
(``budget_px``, growing by ``budget_growth`` a round), let the direct oracle answer (dense
slices, or sparse labels inside regions), and fine-tune the previous round's model on the
target labels so far (early stopping on the target's val split), then score it on the
target's test split. The full-data model is the initial one fine-tuned on every target
pool label.

The arms' curves are read against the *gain* the target labels can buy (``full −
initial``): ``pixels_to_95`` is the labelled target pixels at which the mean curve first
reaches ``initial + 0.95 × gain``; when the gain is below :data:`MIN_GAIN` the benchmark
is not ``valid`` and no arm claims anything.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from tomoloop.active.jobs import Job, run_jobs
from tomoloop.active.label_efficiency import (
    Curve,
    area_under,
    labels_to_hold,
    labels_to_reach,
    labels_to_reach_interpolated,
    mean_curve,
    seed_query,
)
from tomoloop.active.regions import (
    RegionCandidate,
    RegionConstraints,
    answer_region,
    score_regions,
    tile_plane,
)
from tomoloop.active.scoring import ScoreOptions, slice_features
from tomoloop.active.selection import Candidate, Constraints
from tomoloop.active.self_training import class_thresholds, confident_labels
from tomoloop.active.shift_setup import ANNOTATOR, MIN_GAIN, Arm, ShiftData, ShiftSetup
from tomoloop.active.strategies import get
from tomoloop.inference.predict import default_overlap, predict_slice
from tomoloop.labels.masks import merge_by_tier
from tomoloop.labels.phases import IGNORE
from tomoloop.networks.registry import ModelSpec
from tomoloop.training.data import LabelledSlice, tier_weight
from tomoloop.training.evaluation import evaluate
from tomoloop.training.trainer import TrainConfig, train


@dataclass
class _Model:
    module: nn.Module
    spec: ModelSpec


def _build(data: ShiftData, setup: ShiftSetup) -> _Model:
    spec = ModelSpec(
        setup.arch, 1, data.target.n_classes, setup.options, tile=setup.fine_tune.patch
    )
    return _Model(spec.build(), spec)


def _test_miou(model: _Model, data: ShiftData, setup: ShiftSetup) -> float:
    tile = model.spec.tile
    result = evaluate(
        model.module,
        data.target.test,
        data.target.n_classes,
        tile,
        default_overlap(tile),
        setup.device,
    )
    return result.scores.miou


def _fit(
    model: _Model,
    slices: Sequence[LabelledSlice],
    val: Sequence[LabelledSlice],
    config: TrainConfig,
    setup: ShiftSetup,
    n_classes: int,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        train(model.module, slices, val, n_classes, config, folder, setup.device)


@dataclass(frozen=True)
class FineTune:
    """What one fine-tuning did: the target val mIoU of the weights it started from
    (``start_val``) and of each epoch (``epoch_val``). The model ends with its best epoch
    on val, even when that is below ``start_val``."""

    start_val: float
    epoch_val: tuple[float, ...]

    @property
    def beat_start(self) -> bool:
        """Whether its best epoch reads at least ``start_val`` on val."""
        return bool(self.epoch_val) and max(self.epoch_val) >= self.start_val


def fine_tune(
    model: _Model,
    slices: Sequence[LabelledSlice],
    data: ShiftData,
    config: TrainConfig,
    setup: ShiftSetup,
) -> FineTune:
    """Fine-tune ``model`` in place on ``slices``; it ends with the epoch that scores best
    on the target's val split (early stopping on it). The starting weights are not a
    candidate: they were selected on the same val split, so their reading is a maximum
    that a fine-tuning's epochs rarely beat, and keeping them froze rounds that learnt.
    """
    val, n_classes = data.target.val, data.target.n_classes
    start = evaluate(model.module, val, n_classes, config.patch, config.overlap, setup.device)
    with tempfile.TemporaryDirectory() as folder:
        result = train(model.module, slices, val, n_classes, config, folder, setup.device)
    return FineTune(start.scores.miou, tuple(r.val_miou for r in result.history))


LABEL_FREE_SEED = 500
"""Offset of the initial model's fine-tuning seed from ``seed × 1000`` (the arms' rounds
use ``seed × 1000 + round``)."""


class Start(NamedTuple):
    """A seed's initial model: its weights, its target test mIoU, and the test mIoU of the
    sources-only model it was fine-tuned from."""

    weights: dict
    miou: float
    sources_miou: float


def initial_model(seed: int, data: ShiftData, setup: ShiftSetup) -> Start:
    """The model every arm starts from, with no target label but the val split's: trained
    on the sources (early stopping on their val split), then fine-tuned on them as a round
    fine-tunes (early stopping on the target's val split)."""
    torch.manual_seed(seed)
    model = _build(data, setup)
    config = replace(setup.initial_train, seed=seed)
    _fit(model, data.source_train, data.source_val, config, setup, data.target.n_classes)
    sources_miou = _test_miou(model, data, setup)
    tune = replace(setup.fine_tune, seed=seed * 1000 + LABEL_FREE_SEED)
    fine_tune(model, data.source_train, data, tune, setup)
    return Start(_state(model), _test_miou(model, data, setup), sources_miou)


def _state(model: _Model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.module.state_dict().items()}


def _from(state: dict, data: ShiftData, setup: ShiftSetup) -> _Model:
    model = _build(data, setup)
    model.module.load_state_dict(state)
    return model


def full_data_model(seed: int, start: dict, data: ShiftData, setup: ShiftSetup) -> float:
    """Target test mIoU of the initial model fine-tuned on every target pool label, round
    after round as an arm is (``rounds`` fine-tunings, each from the one before, with the
    arms' seeds): an arm that had every label from the first round. One fine-tuning alone
    stopped short of what the arms' models reached with a few slices."""
    model = _from(start, data, setup)
    weight = tier_weight(ANNOTATOR)
    pool = [replace(s, weight=weight) for s in data.target.pool]
    for round_ in range(setup.rounds):
        slices = _replayed(pool, data, setup, seed, round_)
        fine_tune(model, slices, data, replace(setup.fine_tune, seed=seed * 1000 + round_), setup)
    return _test_miou(model, data, setup)


def patch_pixels(slices: Sequence[LabelledSlice], patch: int) -> float:
    """The labelled pixels a ``patch``² training patch of ``slices`` holds on average,
    estimated per slice as its labelled pixels up to ``patch``² (a patch is centred on a
    labelled pixel, so it holds a sparse label's region whole)."""
    return float(np.mean([min(int((s.labels != IGNORE).sum()), patch * patch) for s in slices]))


def with_replay(
    slices: Sequence[LabelledSlice],
    sources: Sequence[LabelledSlice],
    rng: np.random.Generator,
    patch: int,
) -> list[LabelledSlice]:
    """``slices`` and as many of ``sources`` (fewer if there are fewer), drawn without
    replacement, their weight scaled by the ratio of labelled pixels per patch
    (:func:`patch_pixels`, ``slices`` over the drawn sources), so that a source patch
    counts in the loss as a patch of ``slices`` does (their tier weights apart). Patches
    are drawn per slice, so the sources get half of a fine-tune's patches whatever the
    number of target slices; the loss averages over labelled pixels, so without the
    scaling a dense source patch outweighed a patch around one painted 32² region four
    to one.
    """
    count = min(len(slices), len(sources))
    drawn = [sources[int(k)] for k in np.sort(rng.choice(len(sources), size=count, replace=False))]
    scale = patch_pixels(slices, patch) / patch_pixels(drawn, patch) if drawn else 1.0
    return [*slices, *(replace(s, weight=s.weight * scale) for s in drawn)]


def _replayed(
    slices: list[LabelledSlice], data: ShiftData, setup: ShiftSetup, seed: int, round_: int
) -> list[LabelledSlice]:
    """A round's fine-tuning slices: ``slices``, with source slices when the setup
    replays them (their own random stream, so the arms' queries do not change)."""
    if not setup.replay:
        return slices
    rng = np.random.default_rng([seed, 2, round_])
    return with_replay(slices, data.source_train, rng, setup.fine_tune.patch)


def _options(strategy: str, model: _Model, setup: ShiftSetup) -> ScoreOptions:
    chooser = get(strategy)
    tile = model.spec.tile
    return ScoreOptions(
        chooser.scoring,
        tile=tile,
        overlap=default_overlap(tile),
        device=setup.device,
        embed=chooser.embed,
    )


def _query_slices(
    arm: Arm,
    model: _Model,
    data: ShiftData,
    labels: Mapping[int, np.ndarray],
    setup: ShiftSetup,
    budget: int,
    rng: np.random.Generator,
) -> dict[int, np.ndarray]:
    """Whole pool slices for ``budget`` labelled pixels (one at least), answered densely."""
    chooser, options, pool = get(arm.strategy), _options(arm.strategy, model, setup), data.target
    # Core-set needs the labelled slices' embeddings too.
    wanted = [i for i in range(len(pool.pool)) if chooser.embed or i not in labels]
    candidates = {
        i: Candidate.of(
            i, 0, "z", pool.z(i), slice_features(model.module, pool.pool[i].image, options)
        )
        for i in wanted
    }
    free = [c for i, c in candidates.items() if i not in labels]
    taken = [candidates.get(i) or Candidate(i, 0, "z", pool.z(i)) for i in labels]
    slice_px = pool.pool[0].labels.size
    limits = Constraints(max(1, budget // slice_px), None, setup.min_gap)
    chosen = chooser.select(free, limits, taken, rng)
    return {c.slice_id: pool.pool[c.slice_id].labels for c in chosen}


def _query_regions(
    arm: Arm,
    model: _Model,
    data: ShiftData,
    labels: Mapping[int, np.ndarray],
    setup: ShiftSetup,
    budget: int,
    rng: np.random.Generator,
) -> dict[int, np.ndarray]:
    """Regions for ``budget`` labelled pixels, answered as sparse labels (one per slice)."""
    chooser, options, pool = get(arm.strategy), _options(arm.strategy, model, setup), data.target
    free: list[RegionCandidate] = []
    taken: list[RegionCandidate] = []
    for i, s in enumerate(pool.pool):
        tiles = tile_plane(s.image.shape, setup.region, 0, "z", pool.z(i))
        done = labels.get(i)
        for c in score_regions(model.module, s.image, tiles, i, options):
            labelled = done is not None and bool((done[c.region.window] != IGNORE).any())
            (taken if labelled else free).append(c)
    limits = RegionConstraints(budget, setup.distance)
    answers: dict[int, np.ndarray] = {}
    for c in chooser.select(free, limits, taken, rng):
        truth = pool.pool[c.slice_id].labels
        sparse = answer_region(truth, c.region, data.names)
        answers[c.slice_id] = _merged(answers.get(c.slice_id), sparse)
    return answers


def _merged(old: np.ndarray | None, new: np.ndarray) -> np.ndarray:
    """A person's new sparse label of a slice merged over the old one (newest wins)."""
    return new if old is None else merge_by_tier([(ANNOTATOR, old), (ANNOTATOR, new)])


def labelled_count(labels: Mapping[int, np.ndarray]) -> int:
    """Labelled pixels (not :data:`IGNORE`) over every slice's label."""
    return int(sum(int((m != IGNORE).sum()) for m in labels.values()))


def pseudo_labels(
    model: _Model,
    data: ShiftData,
    labels: Mapping[int, np.ndarray],
    setup: ShiftSetup,
) -> list[LabelledSlice]:
    """The ``+self`` arms' tier-``model`` slices: the current model's confident
    predictions on ``self_slices`` pool slices spread over the target (pixels a person
    labelled left out), thresholded per class over all of them.
    """
    pool, tile = data.target.pool, model.spec.tile
    count = min(setup.self_slices, len(pool))
    positions = np.linspace(0, len(pool) - 1, count).round().astype(int).tolist()
    probs = [
        predict_slice(model.module, pool[i].image, tile, default_overlap(tile), 8, setup.device)
        for i in positions
    ]
    st = setup.self_training
    thresholds = class_thresholds(np.stack(probs, axis=1), st.keep, st.floor)
    out = []
    for i, p in zip(positions, probs, strict=True):
        painted = labels[i] != IGNORE if i in labels else None
        label = confident_labels(p, thresholds, painted)
        if (label != IGNORE).any():
            out.append(LabelledSlice(pool[i].image, label, st.weight))
    return out


def arm_curve(
    arm: Arm,
    seed: int,
    data: ShiftData,
    setup: ShiftSetup,
    start: Start,
    on_round: Callable[[int, FineTune, float], None] = lambda *_: None,
) -> Curve:
    """``[(labelled target pixels, target test mIoU), ...]`` of one arm and seed, from the
    ``start`` model (its mIoU at 0 pixels); one point per round
    (``on_round(round, fine-tuning, test mIoU)`` after each).
    """
    rng = np.random.default_rng([seed, 1])
    model = _from(start.weights, data, setup)
    labels: dict[int, np.ndarray] = {}
    curve: Curve = [(0, start.miou)]
    query = _query_regions if arm.unit == "region" else _query_slices
    weight = tier_weight(ANNOTATOR)
    for round_ in range(setup.rounds):
        seed_query(seed, round_)
        answers = query(arm, model, data, labels, setup, setup.round_budget(round_), rng)
        if not answers:
            break
        for i, sparse in answers.items():
            labels[i] = _merged(labels.get(i), sparse)
        extra = pseudo_labels(model, data, labels, setup) if arm.self_training else []
        slices = [replace(data.target.pool[i], labels=m, weight=weight) for i, m in labels.items()]
        config = replace(setup.fine_tune, seed=seed * 1000 + round_)
        tuned = fine_tune(
            model, _replayed(slices + extra, data, setup, seed, round_), data, config, setup
        )
        curve.append((labelled_count(labels), _test_miou(model, data, setup)))
        on_round(round_, tuned, curve[-1][1])
    return curve


def summarise(initial: float, full: float, curves: Mapping[str, Sequence[Curve]]) -> dict:
    """The benchmark document from the initial and full-data mIoU and every arm's seed
    curves: ``{"initial_miou", "full_data_miou", "gain", "target_miou", "valid",
    "auc_pixels", "strategies": {arm: {"pixels_to_95", "pixels_to_95_held",
    "pixels_to_95_interpolated", "auc", "auc_seeds", "curve", "seeds"}}}``.
    ``pixels_to_95_held`` is the labelled pixels from which the mean curve stays at the
    level to its end (a first crossing followed by a fall back below it is not held);
    ``pixels_to_95_interpolated`` the first crossing read between the rounds
    (:func:`labels_to_reach_interpolated`, a float); all three are None for every arm when
    the benchmark is not valid.

    ``auc`` is the mean test mIoU of the arm's mean curve over the same labelled range
    for every arm, 0 to ``auc_pixels`` (the fewest labelled pixels any seed of any arm
    ended with), so arms that label more pixels in their rounds are not credited for it;
    ``auc_seeds`` the same figure for each seed's own curve (seed order), to compare two
    arms seed by seed — the seeds share their initial models.
    """
    gain = full - initial
    valid = gain >= MIN_GAIN
    target = initial + 0.95 * gain
    common = min((c[-1][0] for seeds in curves.values() for c in seeds), default=0)
    strategies = {}
    for name, seeds in curves.items():
        mean = mean_curve(seeds)
        strategies[name] = {
            "pixels_to_95": labels_to_reach(mean, target) if valid else None,
            "pixels_to_95_held": labels_to_hold(mean, target) if valid else None,
            "pixels_to_95_interpolated": (
                labels_to_reach_interpolated(mean, target) if valid else None
            ),
            "auc": area_under(mean, common),
            "auc_seeds": [area_under(c, common) for c in seeds],
            "curve": [list(p) for p in mean],
            "seeds": [[list(p) for p in c] for c in seeds],
        }
    return {
        "initial_miou": initial,
        "full_data_miou": full,
        "gain": gain,
        "target_miou": target,
        "valid": valid,
        "auc_pixels": common,
        "strategies": strategies,
    }


def _seed_mean(values: Mapping[int, float]) -> float:
    """The mean of per-seed figures, summed in seed order (the same float however the
    seeds' jobs finished)."""
    return float(np.mean([values[s] for s in sorted(values)]))


def domain_shift(
    data: ShiftData,
    setup: ShiftSetup,
    on_curve: Callable[[str, int, Curve, float], None] = lambda *_: None,
    on_reference: Callable[[float, float], None] = lambda *_: None,
    workers: int = 1,
) -> dict:
    """Run every arm for every seed; the :func:`summarise` document plus the
    sources-only model's mIoU (``sources_only_miou``, the seeds' mean), each seed's
    sources-only, initial and full-data mIoU (``sources_only_seeds``, ``initial_seeds``,
    ``full_data_seeds``, seed order), the setup's unit figures, the pool's size and the
    seconds each arm took (``on_reference(initial, full)`` once both seed-mean mIoUs are
    known; ``on_curve(arm, seed, curve, seconds)`` after each arm's seed). ``workers`` > 1
    runs the seeds and arms side by side in that many processes
    (:func:`tomoloop.active.jobs.run_jobs`): sooner, and the same document when each job
    computes with as many threads as here.
    """
    seeds = range(setup.seeds)
    begun = run_jobs([(s, initial_model, (s, data, setup)) for s in seeds], workers)
    starts = {seed: start for seed, start, _ in begun}
    initial = _seed_mean({s: starts[s].miou for s in seeds})
    jobs: list[Job[tuple[str, int]]] = [
        (("full", s), full_data_model, (s, starts[s].weights, data, setup)) for s in seeds
    ]
    jobs += [
        ((arm.name, s), arm_curve, (arm, s, data, setup, starts[s]))
        for arm in setup.arms
        for s in seeds
    ]
    fulls: dict[int, float] = {}
    by_seed: dict[str, dict[int, Curve]] = {arm.name: {} for arm in setup.arms}
    seconds = dict.fromkeys(by_seed, 0.0)
    for (name, seed), result, took in run_jobs(jobs, workers):
        if name == "full":
            fulls[seed] = result
            if len(fulls) == setup.seeds:
                on_reference(initial, _seed_mean(fulls))
            continue
        by_seed[name][seed], seconds[name] = result, seconds[name] + took
        on_curve(name, seed, result, took)
    full = _seed_mean(fulls)
    curves = {name: [per_seed[s] for s in seeds] for name, per_seed in by_seed.items()}
    document = summarise(initial, full, curves)
    for name, result in document["strategies"].items():
        result["seconds"] = seconds[name]
    pool = data.target.pool
    document |= {
        "sources_only_miou": _seed_mean({s: starts[s].sources_miou for s in seeds}),
        "sources_only_seeds": [starts[s].sources_miou for s in seeds],
        "initial_seeds": [starts[s].miou for s in seeds],
        "full_data_seeds": [fulls[s] for s in seeds],
        "budget_px": setup.budget_px,
        "budget_growth": setup.budget_growth,
        "region": setup.region,
        "rounds": setup.rounds,
        "seeds": setup.seeds,
        "replay": setup.replay,
        "pool_slices": len(pool),
        "pool_pixels": int(sum(s.labels.size for s in pool)),
    }
    return document
