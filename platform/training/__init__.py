"""Training the semantic networks: labelled slices and patches, the training loop with
checkpoints, evaluation of a trained network."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.training.data import (
        DEFAULT_TIER_WEIGHTS,
        NO_AUGMENTATION,
        TIER_NAMES,
        Augmentation,
        DatasetError,
        LabelledSlice,
        SliceRef,
        augment,
        check_slices,
        labelled_slices,
        load_slices,
        parse_tier_weights,
        prepare_training_slices,
        sample_patches,
        tier_weight,
    )
    from tomoloop.training.evaluation import (
        Evaluation,
        TortuosityCheck,
        evaluate,
        evaluate_groups,
    )
    from tomoloop.training.recipes import RECIPES, SEED_RECIPES, Recipe, apply_recipe, recipe
    from tomoloop.training.trainer import (
        CHECKPOINT,
        EpochRecord,
        TrainConfig,
        TrainingError,
        TrainResult,
        balanced_class_weights,
        class_weights,
        compute_loss,
        mask_unlabelled,
        plot_learning_curve,
        resolve_device,
        train,
        training_loss,
    )

__all__ = [
    "CHECKPOINT",
    "DEFAULT_TIER_WEIGHTS",
    "NO_AUGMENTATION",
    "RECIPES",
    "SEED_RECIPES",
    "TIER_NAMES",
    "Augmentation",
    "DatasetError",
    "EpochRecord",
    "Evaluation",
    "LabelledSlice",
    "Recipe",
    "SliceRef",
    "TortuosityCheck",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "apply_recipe",
    "augment",
    "balanced_class_weights",
    "check_slices",
    "class_weights",
    "compute_loss",
    "evaluate",
    "evaluate_groups",
    "labelled_slices",
    "load_slices",
    "mask_unlabelled",
    "parse_tier_weights",
    "plot_learning_curve",
    "prepare_training_slices",
    "recipe",
    "resolve_device",
    "sample_patches",
    "tier_weight",
    "train",
    "training_loss",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
