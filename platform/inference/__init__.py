"""Prediction on slices and whole volumes (tiled with overlap, blended, streamed to disk) and how
unsure a prediction is (per-pixel uncertainty, MC dropout, flip TTA)."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.inference.predict import (
        VolumePrediction,
        blend_window,
        normalise,
        predict_slice,
        predict_volume,
        tile_origins,
        tile_side,
    )
    from tomoloop.inference.uncertainty import (
        AGGREGATIONS,
        FLIPS,
        enable_dropout,
        entropy,
        foreground_weighted_score,
        margin,
        mean_score,
        mutual_information,
        top_percentile_score,
        tta_variance,
    )

__all__ = [
    "AGGREGATIONS",
    "FLIPS",
    "VolumePrediction",
    "blend_window",
    "enable_dropout",
    "entropy",
    "foreground_weighted_score",
    "margin",
    "mean_score",
    "mutual_information",
    "normalise",
    "predict_slice",
    "predict_volume",
    "tile_origins",
    "tile_side",
    "top_percentile_score",
    "tta_variance",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
