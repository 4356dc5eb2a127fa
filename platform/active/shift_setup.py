"""The domain-shift benchmark's set-up: its arms, settings and data (source and target
slices), read from ``GRAY:LABELS`` stack pairs; :mod:`tomoloop.active.domain_shift` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from tomoloop.active.label_efficiency import BenchmarkError, Split, check_at_least, stack_split
from tomoloop.active.requests import UNITS
from tomoloop.active.self_training import SelfTraining
from tomoloop.active.strategies import STRATEGIES
from tomoloop.labels.phases import PhaseMap
from tomoloop.stacks.opener import open_stack, source_path
from tomoloop.stacks.remote import is_url
from tomoloop.stacks.stack import Stack
from tomoloop.training.data import LabelledSlice
from tomoloop.training.trainer import TrainConfig

MIN_GAIN = 0.05
"""The smallest mIoU gain (full − initial) that makes the benchmark valid."""
SELF = "+self"
DEFAULT_ARMS = "random/slice,random,foreground_random,entropy,bald,hybrid,bald+self"
"""Controls (random slices, random and foreground-random regions), the uncertainty and
diversity arms by the default unit, and BALD with self-training."""
ANNOTATOR = 2  # registry tier of a person's label


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
    """The simulated rounds: ``rounds`` per arm and seed, the first labelling ``budget_px``
    target pixels and each next ``budget_growth`` times as many as the one before
    (:meth:`round_budget`; 1: the same every round, 2: doubling, so the curve's points are
    as dense early, where a control may already reach the level, as late); regions of
    ``region``² pixels at least ``min_distance`` pixels apart within a slice (None: one
    region side); chosen slices ``min_gap`` apart; an ``arch`` with ``options`` trained by
    ``initial_train`` on the sources, fine-tuned by ``fine_tune`` once on them (selected on
    the target's val split) and then each round, on ``device``; ``self_training``
    settings for the ``+self`` arms, which pseudo-label ``self_slices`` pool slices spread
    over the target. With ``replay`` (the default) each
    fine-tune also trains on source slices, as many as it has target slices (half the
    patches, each weighted as a target patch is per labelled pixel), as the platform's loop
    trains on every scan of a dataset; without it, on the target only.
    """

    arms: tuple[Arm, ...] = field(default_factory=lambda: parse_arms(DEFAULT_ARMS))
    seeds: int = 3
    rounds: int = 4
    budget_px: int = 4096
    budget_growth: float = 1.0
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
    replay: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        regions = any(arm.unit == "region" for arm in self.arms)
        check_at_least(
            (
                ("seeds", self.seeds, 1),
                ("rounds", self.rounds, 1),
                ("region", self.region, 16),
                # a region arm's round labels whole regions: one at least
                ("budget_px", self.budget_px, self.region**2 if regions else 1),
                ("budget_growth", self.budget_growth, 1),
            )
        )

    def round_budget(self, round_: int) -> int:
        """The labelled target pixels round ``round_`` (from 0) may add:
        ``budget_px × budget_growth ** round_``, rounded down."""
        return int(self.budget_px * self.budget_growth**round_)

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
        BenchmarkError: not two non-empty paths, or a URL (the pairs are local files: a
            colon cannot tell a URL's scheme from the pair's separator).
    """
    if is_url(text):
        raise BenchmarkError(
            f"{text!r}: --source and --target pairs read local files, not URLs; copy the "
            "scans to a local disk (--gray and --labels take URLs)"
        )
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
