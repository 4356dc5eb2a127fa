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
    from tomoloop.training.evaluation import Evaluation, TortuosityCheck, evaluate
    from tomoloop.training.trainer import (
        CHECKPOINT,
        EpochRecord,
        TrainConfig,
        TrainingError,
        TrainResult,
        compute_loss,
        mask_unlabelled,
        plot_learning_curve,
        resolve_device,
        train,
    )

__all__ = [
    "CHECKPOINT",
    "DEFAULT_TIER_WEIGHTS",
    "NO_AUGMENTATION",
    "TIER_NAMES",
    "Augmentation",
    "DatasetError",
    "EpochRecord",
    "Evaluation",
    "LabelledSlice",
    "SliceRef",
    "TortuosityCheck",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "augment",
    "check_slices",
    "compute_loss",
    "evaluate",
    "labelled_slices",
    "load_slices",
    "mask_unlabelled",
    "parse_tier_weights",
    "plot_learning_curve",
    "prepare_training_slices",
    "resolve_device",
    "sample_patches",
    "tier_weight",
    "train",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Augmentation": "tomoloop.training.data",
        "CHECKPOINT": "tomoloop.training.trainer",
        "DEFAULT_TIER_WEIGHTS": "tomoloop.training.data",
        "DatasetError": "tomoloop.training.data",
        "EpochRecord": "tomoloop.training.trainer",
        "Evaluation": "tomoloop.training.evaluation",
        "LabelledSlice": "tomoloop.training.data",
        "NO_AUGMENTATION": "tomoloop.training.data",
        "SliceRef": "tomoloop.training.data",
        "TIER_NAMES": "tomoloop.training.data",
        "TortuosityCheck": "tomoloop.training.evaluation",
        "TrainConfig": "tomoloop.training.trainer",
        "TrainResult": "tomoloop.training.trainer",
        "TrainingError": "tomoloop.training.trainer",
        "augment": "tomoloop.training.data",
        "check_slices": "tomoloop.training.data",
        "compute_loss": "tomoloop.training.trainer",
        "evaluate": "tomoloop.training.evaluation",
        "labelled_slices": "tomoloop.training.data",
        "load_slices": "tomoloop.training.data",
        "mask_unlabelled": "tomoloop.training.trainer",
        "parse_tier_weights": "tomoloop.training.data",
        "plot_learning_curve": "tomoloop.training.trainer",
        "prepare_training_slices": "tomoloop.training.data",
        "resolve_device": "tomoloop.training.trainer",
        "sample_patches": "tomoloop.training.data",
        "tier_weight": "tomoloop.training.data",
        "train": "tomoloop.training.trainer",
    },
)
