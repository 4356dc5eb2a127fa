"""Label efficiency: how many labelled slices each query strategy needs.

A simulated loop with a direct oracle (the gold labels, no server): per seed, start from
the same ``initial`` random slices of the training block, train from scratch, score the
unlabelled slices, let the strategy choose ``budget`` more, train again, … and measure
the test mIoU after each round. A model trained on every training slice gives the
full-data mIoU; a strategy's ``labels_to_95`` is the fewest labelled slices at which its
mean curve (over seeds) reaches 95 % of it, and its ``auc`` the mean test mIoU over the
labelled-slice range (trapezoids, so 1.0 is perfect).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from tomoloop.active.scoring import ScoreOptions, slice_features
from tomoloop.active.selection import Candidate, Constraints
from tomoloop.active.strategies import get
from tomoloop.errors import TomoloopError
from tomoloop.inference.predict import default_overlap, normalise
from tomoloop.labels.masks import class_counts
from tomoloop.labels.phases import PhaseMap, check_declared, class_index_lut
from tomoloop.labels.splits import balanced_split
from tomoloop.networks.registry import ModelSpec
from tomoloop.stacks.checks import check_same_shape
from tomoloop.stacks.stack import Stack
from tomoloop.stacks.window import percentile_window
from tomoloop.training.data import LabelledSlice
from tomoloop.training.evaluation import evaluate
from tomoloop.training.trainer import TrainConfig, train

Curve = list[tuple[int, float]]
Fitted = tuple[torch.nn.Module, ModelSpec, float]  # (model, its spec, test mIoU)


class BenchmarkError(TomoloopError):
    """A benchmark that cannot run as asked (unknown arm or unit, empty split, a count
    out of range)."""


def check_at_least(values: Sequence[tuple[str, float, float]]) -> None:
    """Refuse, in one message, every ``(name, value, least)`` whose value is below least.

    Raises:
        BenchmarkError: ``"seeds 0 must be ≥ 1; rounds 0 must be ≥ 1"``.
    """
    problems = [
        f"{name} {value} must be ≥ {least}" for name, value, least in values if value < least
    ]
    if problems:
        raise BenchmarkError("; ".join(problems))


@dataclass(frozen=True)
class EfficiencySetup:
    """The simulated loop: ``rounds`` of ``budget`` slices after ``initial`` random ones,
    chosen slices ``min_gap`` apart, each model an ``arch`` trained from scratch with
    ``train`` on ``device``.
    """

    strategies: tuple[str, ...] = ("random", "bald")
    seeds: int = 3
    rounds: int = 4
    budget: int = 4
    initial: int = 4
    min_gap: int = 2
    arch: str = "unet"
    options: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, patience=0))
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_at_least(
            (
                ("seeds", self.seeds, 1),
                ("rounds", self.rounds, 1),
                ("budget", self.budget, 1),
                ("initial", self.initial, 1),
                ("min_gap", self.min_gap, 0),
            )
        )


@dataclass(frozen=True)
class Split:
    """Training pool (indexed by position; ``pool_z`` their z indices, for the gap
    constraint), validation and test slices (``val_z``, ``test_z`` their z indices).
    """

    pool: Sequence[LabelledSlice]
    val: Sequence[LabelledSlice]
    test: Sequence[LabelledSlice]
    n_classes: int
    pool_z: Sequence[int] = ()
    val_z: Sequence[int] = ()
    test_z: Sequence[int] = ()

    def z(self, position: int) -> int:
        return self.pool_z[position] if self.pool_z else position


def stack_split(
    gray: Stack,
    labels: Stack,
    phases: PhaseMap,
    fractions: tuple[float, float, float] = (0.6, 0.15, 0.25),
) -> Split:
    """Pool / val / test z slices of a grayscale and label stack pair (interleaved blocks
    with gaps, none short of a class: :func:`tomoloop.labels.balanced_split`), grey values
    normalised by the stack's percentile window, labels as class indices.
    """
    check_same_shape(gray, labels)
    window = percentile_window(gray)
    lut = class_index_lut(phases)
    classes: dict[int, np.ndarray] = {}
    for z, raw in labels.iter_slices("z"):
        check_declared(raw, phases, f"{labels.path.name} z={z}")
        classes[z] = lut[raw]
    counts = np.stack([class_counts(c, len(phases)) for c in classes.values()])
    parts = balanced_split(counts, fractions)
    out = {
        name: [
            LabelledSlice(normalise(image, window), classes[z])
            for z, image in gray.iter_slices("z", indices)
        ]
        for name, indices in parts.items()
    }
    return Split(
        out["train"],
        out["val"],
        out["test"],
        len(phases),
        tuple(parts["train"]),
        tuple(parts["val"]),
        tuple(parts["test"]),
    )


def _fit(
    labelled: Sequence[LabelledSlice], split: Split, setup: EfficiencySetup, seed: int
) -> Fitted:
    torch.manual_seed(seed)
    spec = ModelSpec(setup.arch, 1, split.n_classes, setup.options, tile=setup.train.patch)
    model = spec.build()
    with tempfile.TemporaryDirectory() as folder:
        train(
            model,
            labelled,
            split.val,
            split.n_classes,
            replace(setup.train, seed=seed),
            folder,
            setup.device,
        )
    score = evaluate(
        model, split.test, split.n_classes, spec.tile, default_overlap(spec.tile), setup.device
    ).scores.miou
    return model, spec, score


def seed_query(seed: int, round_: int) -> None:
    """Seed torch's generator for a seed's ``round_``-th query. Stochastic scores draw
    from it (MC-dropout masks), so without this a strategy chose by what ran in the
    process before: another strategy's curve, or another job in the same worker."""
    torch.manual_seed(seed * 1000 + round_)


def initial_slices(seed: int, split: Split, setup: EfficiencySetup) -> list[int]:
    """The random pool positions every strategy of a seed starts from."""
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(len(split.pool), setup.initial, replace=False).tolist())


def learning_curve(
    strategy: str, seed: int, split: Split, setup: EfficiencySetup, start: Fitted | None = None
) -> Curve:
    """``[(labelled slices, test mIoU), ...]`` of one strategy and seed, rounds + 1 points.

    ``start``: the ``(model, spec, mIoU)`` already trained on the seed's initial slices
    (shared by the strategies), or None to train it here.
    """
    chooser = get(strategy)
    rng = np.random.default_rng([seed, 1])
    labelled = initial_slices(seed, split, setup)
    curve: Curve = []
    for round_ in range(setup.rounds + 1):
        if round_ == 0 and start is not None:
            model, spec, miou = start
        else:
            model, spec, miou = _fit([split.pool[i] for i in labelled], split, setup, seed)
        curve.append((len(labelled), miou))
        if round_ == setup.rounds:
            break
        seed_query(seed, round_)
        options = ScoreOptions(
            chooser.scoring,
            tile=spec.tile,
            overlap=default_overlap(spec.tile),
            device=setup.device,
            embed=chooser.embed,
        )
        wanted = (
            range(len(split.pool))
            if chooser.embed
            else (i for i in range(len(split.pool)) if i not in labelled)
        )
        candidates = {
            i: Candidate.of(
                i, 0, "z", split.z(i), slice_features(model, split.pool[i].image, options)
            )
            for i in wanted
        }
        free = [c for i, c in candidates.items() if i not in labelled]
        # Every labelled slice holds its neighbours off, for every strategy alike.
        taken = [candidates.get(i) or Candidate(i, 0, "z", split.z(i)) for i in labelled]
        limits = Constraints(setup.budget, None, setup.min_gap)
        chosen = chooser.select(free, limits, taken, rng)
        if not chosen:
            break
        labelled = sorted(labelled + [c.slice_id for c in chosen])
    return curve


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """The point-wise mean over seeds (curves of one strategy share their x values)."""
    length = min(len(c) for c in curves)
    return [
        (
            round(float(np.mean([c[k][0] for c in curves]))),
            float(np.mean([c[k][1] for c in curves])),
        )
        for k in range(length)
    ]


def labels_to_reach(curve: Curve, target: float) -> int | None:
    """The fewest labelled slices at which the curve reaches ``target``; None if never."""
    return next((n for n, score in curve if score >= target), None)


def labels_to_reach_interpolated(curve: Curve, target: float) -> float | None:
    """Where the curve first reaches ``target``, read between its points: the x of the
    first point at or above it (:func:`labels_to_reach`) moved back towards the point
    before, interpolated linearly in log x (linearly in x from a point at 0). The model
    of the curve this assumes: between two rounds the score rises steadily with the
    logarithm of the labels, as learning curves roughly do; it reads a grid of rounds
    that double finer than one round, not the curve's noise. Within [x before, x];
    None if never reached.
    """
    for k, (n, score) in enumerate(curve):
        if not score >= target:
            continue
        before, below = curve[k - 1] if k else (n, score)
        if score == target or not below < target:  # on the point; the first; a NaN before
            return float(n)
        part = (target - below) / (score - below)
        if before <= 0:
            between = before + part * (n - before)
        else:
            between = np.exp(np.log(before) + part * (np.log(n) - np.log(before)))
        return float(min(max(between, before), n))
    return None


def labels_to_hold(curve: Curve, target: float) -> int | None:
    """The fewest labelled units from which the curve stays at or above ``target`` to its
    last point (a crossing that holds); None if its last point is below."""
    held = None
    for n, score in reversed(curve):
        if score < target:
            break
        held = n
    return held


def area_under(curve: Curve, upto: float | None = None) -> float:
    """Mean score over the curve's labelled range, from its first x to ``upto`` (default:
    its last x; the curve is cut there, interpolated linearly), by trapezoids; for a
    range of zero width, the mean score at the first x.
    """
    xs, ys = np.array([p[0] for p in curve], float), np.array([p[1] for p in curve], float)
    end = xs[-1] if upto is None else min(float(upto), xs[-1])
    if end <= xs[0]:
        return float(ys[xs == xs[0]].mean())
    inside = xs < end
    xs, ys = np.append(xs[inside], end), np.append(ys[inside], np.interp(end, xs, ys))
    return float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)) / (end - xs[0]))


def efficiency(
    split: Split,
    setup: EfficiencySetup,
    on_curve: Callable[[str, int, Curve], None] = lambda *_: None,
) -> dict:
    """The label-efficiency document: ``{"full_data_miou": x, "strategies": {name:
    {"labels_to_95": n or None, "auc": x, "curve": [[labelled, mIoU], ...],
    "seeds": [curve, ...]}}}``.

    Raises:
        BenchmarkError: more ``initial`` slices than the pool holds (before any training).
    """
    if setup.initial > len(split.pool):
        raise BenchmarkError(
            f"initial {setup.initial} is more than the {len(split.pool)} slices of the "
            f"training pool: ask for at most {len(split.pool)} (or use a deeper stack)"
        )
    full = float(np.mean([_fit(split.pool, split, setup, seed)[2] for seed in range(setup.seeds)]))
    starts = {
        seed: _fit([split.pool[i] for i in initial_slices(seed, split, setup)], split, setup, seed)
        for seed in range(setup.seeds)
    }
    strategies = {}
    for name in setup.strategies:
        curves = []
        for seed in range(setup.seeds):
            curves.append(learning_curve(name, seed, split, setup, starts[seed]))
            on_curve(name, seed, curves[-1])
        mean = mean_curve(curves)
        strategies[name] = {
            "labels_to_95": labels_to_reach(mean, 0.95 * full),
            "auc": area_under(mean),
            "curve": [list(p) for p in mean],
            "seeds": [[list(p) for p in c] for c in curves],
        }
    return {"full_data_miou": full, "pool_slices": len(split.pool), "strategies": strategies}
