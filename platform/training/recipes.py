"""Training recipes: the settings a paper trains a network with, one ``--recipe`` away.

``default`` is tomoloop's own settings (every option at its default). ``seed`` is the
published recipe of the paper the architecture comes from (docs/seeds.md says what each
setting is and where the paper gives it). Options given explicitly win over the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tomoloop.errors import TomoloopError


@dataclass(frozen=True)
class Recipe:
    """Training settings (:class:`~tomoloop.training.TrainConfig` fields) and network options
    (``--option``) a recipe sets."""

    config: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


_QUENUM = Recipe({"loss": "bce"})  # Quenum et al. 2023, §4: BCE (128² patches: the default)

SEED_RECIPES: dict[str, Recipe] = {
    # Tabassum et al. n.d., App. §II: weighted cross-entropy, k = 10 row-removed copies,
    # UGSM 100 epochs then LCGAR 15, a fixed number of epochs (no early stopping)
    "matphase": Recipe(
        {"loss": "ce", "class_weights": "balanced", "row_removal": 10, "patience": 0},
        {"schedule": "two_stage", "ugsm_share": 100 / 115},
    ),
    # Su et al. 2022's code (SegmentPy): 80 kernels of 9 × 9
    "lrcsnet": Recipe(options={"base": 80, "kernel": 9}),
    "unet": _QUENUM,
    "ynet": _QUENUM,
    "transforcnn": _QUENUM,
    "enet": _QUENUM,
}

RECIPES = ("default", "seed")


def recipe(name: str, arch: str) -> Recipe:
    """The settings recipe ``name`` (:data:`RECIPES`) trains ``arch`` with."""
    if name not in RECIPES:
        raise TomoloopError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    if name == "default":
        return Recipe()
    if arch not in SEED_RECIPES:
        raise TomoloopError(
            f"no published recipe for {arch!r}: --recipe seed covers {', '.join(SEED_RECIPES)}"
        )
    return SEED_RECIPES[arch]


def apply_recipe(
    name: str, arch: str, config: dict[str, Any], options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, network options): recipe ``name``'s for ``arch`` with the
    explicitly given ``config`` and ``options`` on top."""
    chosen = recipe(name, arch)
    return {**chosen.config, **config}, {**chosen.options, **options}
