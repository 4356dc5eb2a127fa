"""Metrics: semantic segmentation scores, COCO AP, microstructure numbers."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.metrics.coco import instance_scores, mean_ap, self_consistency_ap
    from tomoloop.metrics.semantic import (
        BestAndLowest,
        SegmentationScores,
        best_and_lowest,
        confusion_matrix,
        patch_scores,
        scores,
        volume_fractions,
    )
    from tomoloop.metrics.structure import (
        AXES,
        interface_area,
        microstructure,
        percolates,
        specific_surface_area,
        tortuosity,
    )

__all__ = [
    "AXES",
    "BestAndLowest",
    "SegmentationScores",
    "best_and_lowest",
    "confusion_matrix",
    "instance_scores",
    "interface_area",
    "mean_ap",
    "microstructure",
    "patch_scores",
    "percolates",
    "scores",
    "self_consistency_ap",
    "specific_surface_area",
    "tortuosity",
    "volume_fractions",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
