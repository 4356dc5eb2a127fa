"""Domain-shift label efficiency: how many labelled pixels of a new scan each arm needs.

A model trained on earlier scans (the *sources*) meets a new one (the *target*: another
volume, imaged differently) and is wrong in places. Per seed, the initial model is trained
on the sources only (early stopping on the sources' val split) and scored on the target's
test split. Each arm then runs ``rounds`` rounds on the target's training pool: score the
unlabelled units (whole z slices or square regions of them) with the current model, let
its strategy choose units for ``budget_px`` labelled pixels, let the direct oracle answer
(dense slices, or sparse labels inside regions), and fine-tune the previous round's model
on the target labels so far (early stopping on the target's val split), then score it on
the target's test split. The full-data model is the initial one fine-tuned on every
target pool label.

The arms' curves are read against the *gain* the target labels can buy (``full −
initial``): ``pixels_to_95`` is the labelled target pixels at which the mean curve first
reaches ``initial + 0.95 × gain``; when the gain is below :data:`MIN_GAIN` the benchmark
is not ``valid`` and no arm claims anything.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tomoloop.active.label_efficiency import (
    Curve,
    Split,
    area_under,
    labels_to_reach,
    mean_curve,
    stack_split,
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
from tomoloop.active.self_training import SelfTraining, class_thresholds, confident_labels
from tomoloop.active.strategies import STRATEGIES, get
from tomoloop.errors import TomoloopError
from tomoloop.inference.predict import default_overlap, predict_slice
from tomoloop.labels.masks import merge_by_tier
from tomoloop.labels.phases import IGNORE, PhaseMap
from tomoloop.networks.registry import ModelSpec
from tomoloop.stacks.opener import open_stack, source_path
from tomoloop.stacks.stack import Stack
from tomoloop.training.data import LabelledSlice, tier_weight
from tomoloop.training.evaluation import evaluate
from tomoloop.training.trainer import TrainConfig, train

UNITS = ("slice", "region")
MIN_GAIN = 0.05
"""The smallest mIoU gain (full − initial) that makes the benchmark valid."""
SELF = "+self"
DEFAULT_ARMS = "random/slice,random,foreground_random,entropy,bald,hybrid,bald+self"
"""Controls (random slices, random and foreground-random regions), the uncertainty and
diversity arms by the default unit, and BALD with self-training."""
ANNOTATOR = 2  # registry tier of a person's label


class BenchmarkError(TomoloopError):
    """A benchmark that cannot run as asked (unknown arm or unit, empty split)."""


@dataclass(frozen=True)
class Arm:
    """One arm: a query ``strategy`` (a name of :data:`tomoloop.active.STRATEGIES`) asking
    for ``unit`` s (``slice`` or ``region``), with or without ``self_training``.
    """

    strategy: str
    unit: str
    self_training: bool = False

    @property
    def name(self) -> str:
        """``STRATEGY[+self]/UNIT``."""
        return f"{self.strategy}{SELF if self.self_training else ''}/{self.unit}"


def parse_arms(text: str, unit: str = "region") -> tuple[Arm, ...]:
    """Arms from ``"random/slice,bald,bald+self"``: ``STRATEGY[+self][/UNIT]``, the unit
    defaulting to ``unit``; an arm named twice runs once.

    Raises:
        BenchmarkError: an unknown unit or strategy, or no arm.
    """
    arms = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        head, _, own_unit = item.partition("/")
        chosen_unit = own_unit or unit
        if chosen_unit not in UNITS:
            raise BenchmarkError(f"arm {item!r}: unit {chosen_unit!r} is not one of {UNITS}")
        strategy = head.removesuffix(SELF)
        if strategy not in _strategy_names():
            raise BenchmarkError(
                f"arm {item!r}: unknown strategy {strategy!r}: one of "
                f"{', '.join(_strategy_names())} (add {SELF} for self-training, /slice or "
                "/region for the unit)"
            )
        arms.append(Arm(strategy, chosen_unit, head.endswith(SELF)))
    if not arms:
        raise BenchmarkError("no arm given: name strategies, e.g. random,bald,bald+self")
    return tuple(dict.fromkeys(arms))


def _strategy_names() -> list[str]:
    """Strategies that score a plain semantic network (no instance model, no ensemble)."""
    return [n for n, s in STRATEGIES.items() if not s.instances and s.scoring != "ensemble"]


@dataclass(frozen=True)
class ShiftSetup:
    """The simulated rounds: ``rounds`` of ``budget_px`` labelled target pixels per arm and
    seed; regions of ``region``² pixels at least ``min_distance`` voxels apart (None: one
    region side); chosen slices ``min_gap`` apart; an ``arch`` with ``options`` trained by
    ``initial_train`` on the sources and fine-tuned by ``fine_tune`` each round, on
    ``device``; ``self_training`` settings for the ``+self`` arms, which pseudo-label
    ``self_slices`` pool slices spread over the target.
    """

    arms: tuple[Arm, ...] = field(default_factory=lambda: parse_arms(DEFAULT_ARMS))
    seeds: int = 3
    rounds: int = 4
    budget_px: int = 4096
    region: int = 32
    min_distance: float | None = None
    min_gap: int = 2
    arch: str = "unet"
    options: dict = field(default_factory=lambda: {"base": 8, "depth": 3})
    initial_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=30, patch=64, batch=8, patches_per_epoch=128, overlap=16, patience=4
        )
    )
    fine_tune: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=30, patch=64, batch=8, patches_per_epoch=256, overlap=16, patience=5, lr=5e-4
        )
    )
    self_training: SelfTraining = field(default_factory=lambda: SelfTraining(enabled=True))
    self_slices: int = 8
    device: str = "cpu"

    def __post_init__(self) -> None:
        problems = [
            f"{what} {value} must be ≥ {least}"
            for what, value, least in (
                ("seeds", self.seeds, 1),
                ("rounds", self.rounds, 1),
                ("budget_px", self.budget_px, 1),
                ("region", self.region, 16),
            )
            if value < least
        ]
        if problems:
            raise BenchmarkError("; ".join(problems))

    @property
    def distance(self) -> float:
        return float(self.region if self.min_distance is None else self.min_distance)


@dataclass(frozen=True)
class ShiftData:
    """Source training and val slices, and the target's pool / val / test split."""

    source_train: Sequence[LabelledSlice]
    source_val: Sequence[LabelledSlice]
    target: Split
    names: tuple[str, ...]


def shift_data(
    sources: Sequence[tuple[Stack, Stack]], target: tuple[Stack, Stack], phases: PhaseMap
) -> ShiftData:
    """The benchmark's slices from (grayscale, labels) stack pairs: every source split
    80 / 20 into train / val (:func:`tomoloop.active.stack_split`), the target into pool /
    val / test (60 / 15 / 25).

    Raises:
        BenchmarkError: no source, or a split without slices.
    """
    if not sources:
        raise BenchmarkError("no source given: pass --source GRAY:LABELS at least once")
    train_slices: list[LabelledSlice] = []
    val_slices: list[LabelledSlice] = []
    for gray, labels in sources:
        split = stack_split(gray, labels, phases, (0.8, 0.2, 0.0))
        train_slices += split.pool
        val_slices += split.val
    goal = stack_split(*target, phases)
    for what, part in (
        ("source train", train_slices),
        ("source val", val_slices),
        ("target pool", goal.pool),
        ("target val", goal.val),
        ("target test", goal.test),
    ):
        if not part:
            raise BenchmarkError(f"the {what} split is empty: use deeper stacks")
    return ShiftData(train_slices, val_slices, goal, phases.names)


def parse_pair(text: str) -> tuple[Path, Path]:
    """``"GRAY:LABELS"`` → the two stack sources. Sources may hold colons themselves
    (``scan.h5:/exchange/data:scan.h5:/labels``): the pair splits at the first colon where
    both sides name existing files, else at the last colon.

    Raises:
        BenchmarkError: not two non-empty paths.
    """
    cuts = [k for k, char in enumerate(text) if char == ":"]
    found = next(
        (k for k in cuts if source_path(text[:k]).exists() and source_path(text[k + 1 :]).exists()),
        cuts[-1] if cuts else None,
    )
    gray, labels = (text[:found], text[found + 1 :]) if found is not None else ("", "")
    if not gray or not labels:
        raise BenchmarkError(
            f"{text!r} is not GRAY:LABELS: give a grayscale stack and its label stack "
            "joined by a colon, e.g. scan2_gray.tif:scan2_labels.tif"
        )
    return Path(gray), Path(labels)


def read_shift_data(
    sources: Sequence[tuple[Path, Path]], target: tuple[Path, Path], phases: PhaseMap
) -> ShiftData:
    """:func:`shift_data` of stacks on disk, each opened once and closed again."""
    with ExitStack() as stacks:
        pairs = [
            (stacks.enter_context(open_stack(g)), stacks.enter_context(open_stack(lab)))
            for g, lab in [*sources, target]
        ]
        return shift_data(pairs[:-1], pairs[-1], phases)


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


def fine_tune(
    model: _Model,
    slices: Sequence[LabelledSlice],
    data: ShiftData,
    config: TrainConfig,
    setup: ShiftSetup,
) -> None:
    """Fine-tune ``model`` in place on ``slices`` with early stopping on the target's val
    split, the starting weights counting as epoch 0: when no epoch beats them on val, the
    model keeps them (a round that teaches nothing does not make the model worse).
    """
    val, n_classes = data.target.val, data.target.n_classes
    before = _state(model)
    start = evaluate(model.module, val, n_classes, config.patch, config.overlap, setup.device)
    with tempfile.TemporaryDirectory() as folder:
        result = train(model.module, slices, val, n_classes, config, folder, setup.device)
    if result.best_miou < start.scores.miou:
        model.module.load_state_dict(before)


def initial_model(seed: int, data: ShiftData, setup: ShiftSetup) -> tuple[dict, float]:
    """(weights, target test mIoU) of the model trained on the sources only."""
    torch.manual_seed(seed)
    model = _build(data, setup)
    config = replace(setup.initial_train, seed=seed)
    _fit(model, data.source_train, data.source_val, config, setup, data.target.n_classes)
    return _state(model), _test_miou(model, data, setup)


def _state(model: _Model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.module.state_dict().items()}


def _from(state: dict, data: ShiftData, setup: ShiftSetup) -> _Model:
    model = _build(data, setup)
    model.module.load_state_dict(state)
    return model


def full_data_model(seed: int, start: dict, data: ShiftData, setup: ShiftSetup) -> float:
    """Target test mIoU of the initial model fine-tuned on every target pool label."""
    model = _from(start, data, setup)
    weight = tier_weight(ANNOTATOR)
    pool = [replace(s, weight=weight) for s in data.target.pool]
    config = replace(setup.fine_tune, seed=seed)
    fine_tune(model, pool, data, config, setup)
    return _test_miou(model, data, setup)


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
    rng: np.random.Generator,
) -> dict[int, np.ndarray]:
    """Whole pool slices for the round's budget (at least one), answered densely."""
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
    limits = Constraints(max(1, setup.budget_px // slice_px), None, setup.min_gap)
    chosen = chooser.select(free, limits, taken, rng)
    return {c.slice_id: pool.pool[c.slice_id].labels for c in chosen}


def _query_regions(
    arm: Arm,
    model: _Model,
    data: ShiftData,
    labels: Mapping[int, np.ndarray],
    setup: ShiftSetup,
    rng: np.random.Generator,
) -> dict[int, np.ndarray]:
    """Regions for the round's pixel budget, answered as sparse labels (one per slice)."""
    chooser, options, pool = get(arm.strategy), _options(arm.strategy, model, setup), data.target
    free: list[RegionCandidate] = []
    taken: list[RegionCandidate] = []
    for i, s in enumerate(pool.pool):
        tiles = tile_plane(s.image.shape, setup.region, 0, "z", pool.z(i))
        done = labels.get(i)
        for c in score_regions(model.module, s.image, tiles, i, options):
            labelled = done is not None and bool((done[c.region.window] != IGNORE).any())
            (taken if labelled else free).append(c)
    limits = RegionConstraints(setup.budget_px, setup.distance)
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
    start: tuple[dict, float],
) -> Curve:
    """``[(labelled target pixels, target test mIoU), ...]`` of one arm and seed, from the
    initial model's ``(weights, mIoU)`` at 0 pixels; one point per round.
    """
    rng = np.random.default_rng([seed, 1])
    model = _from(start[0], data, setup)
    labels: dict[int, np.ndarray] = {}
    curve: Curve = [(0, start[1])]
    query = _query_regions if arm.unit == "region" else _query_slices
    weight = tier_weight(ANNOTATOR)
    for round_ in range(setup.rounds):
        answers = query(arm, model, data, labels, setup, rng)
        if not answers:
            break
        for i, sparse in answers.items():
            labels[i] = _merged(labels.get(i), sparse)
        extra = pseudo_labels(model, data, labels, setup) if arm.self_training else []
        slices = [replace(data.target.pool[i], labels=m, weight=weight) for i, m in labels.items()]
        config = replace(setup.fine_tune, seed=seed * 1000 + round_)
        fine_tune(model, slices + extra, data, config, setup)
        curve.append((labelled_count(labels), _test_miou(model, data, setup)))
    return curve


def summarise(initial: float, full: float, curves: Mapping[str, Sequence[Curve]]) -> dict:
    """The benchmark document from the initial and full-data mIoU and every arm's seed
    curves: ``{"initial_miou", "full_data_miou", "gain", "target_miou", "valid",
    "strategies": {arm: {"pixels_to_95", "auc", "curve", "seeds"}}}``; ``pixels_to_95``
    is None for every arm when the benchmark is not valid.
    """
    gain = full - initial
    valid = gain >= MIN_GAIN
    target = initial + 0.95 * gain
    strategies = {}
    for name, seeds in curves.items():
        mean = mean_curve(seeds)
        strategies[name] = {
            "pixels_to_95": labels_to_reach(mean, target) if valid else None,
            "auc": area_under(mean),
            "curve": [list(p) for p in mean],
            "seeds": [[list(p) for p in c] for c in seeds],
        }
    return {
        "initial_miou": initial,
        "full_data_miou": full,
        "gain": gain,
        "target_miou": target,
        "valid": valid,
        "strategies": strategies,
    }


def domain_shift(
    data: ShiftData,
    setup: ShiftSetup,
    on_curve: Callable[[str, int, Curve, float], None] = lambda *_: None,
) -> dict:
    """Run every arm for every seed; the :func:`summarise` document plus the setup's unit
    figures, the pool's size and the seconds each arm took (``on_curve(arm, seed, curve,
    seconds)`` after each).
    """
    starts = {seed: initial_model(seed, data, setup) for seed in range(setup.seeds)}
    full = float(
        np.mean([full_data_model(s, starts[s][0], data, setup) for s in range(setup.seeds)])
    )
    initial = float(np.mean([starts[s][1] for s in range(setup.seeds)]))
    curves: dict[str, list[Curve]] = {}
    seconds: dict[str, float] = {}
    for arm in setup.arms:
        curves[arm.name], seconds[arm.name] = [], 0.0
        for seed in range(setup.seeds):
            began = time.perf_counter()
            curves[arm.name].append(arm_curve(arm, seed, data, setup, starts[seed]))
            took = time.perf_counter() - began
            seconds[arm.name] += took
            on_curve(arm.name, seed, curves[arm.name][-1], took)
    document = summarise(initial, full, curves)
    for name, result in document["strategies"].items():
        result["seconds"] = seconds[name]
    pool = data.target.pool
    document |= {
        "budget_px": setup.budget_px,
        "region": setup.region,
        "rounds": setup.rounds,
        "seeds": setup.seeds,
        "pool_slices": len(pool),
        "pool_pixels": int(sum(s.labels.size for s in pool)),
    }
    return document


def quick(setup: ShiftSetup) -> ShiftSetup:
    """The CI-sized form of a setup (``--quick``): one seed, at most two rounds, a tiny
    network trained for a few short epochs, two pseudo-labelled slices.
    """
    return replace(
        setup,
        seeds=1,
        rounds=min(setup.rounds, 2),
        options={"base": 4, "depth": 2},
        initial_train=TrainConfig(
            epochs=2, patch=32, batch=4, patches_per_epoch=16, overlap=8, patience=0
        ),
        fine_tune=TrainConfig(
            epochs=2, patch=32, batch=4, patches_per_epoch=8, overlap=8, patience=1
        ),
        self_slices=2,
    )
