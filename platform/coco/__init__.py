"""Binarized / multiphase label stacks → COCO instance annotations and semantic masks."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.coco.convert import (
        CocoOptions,
        CocoSummary,
        batches,
        check_out,
        convert_stack,
        instance_annotations,
        prepare_out,
        publish,
        slice_name,
    )
    from tomoloop.coco.instances import (
        Connectivity,
        Runs,
        SliceInstances,
        batch_instances,
        compress,
        label_runs,
        mask_polygons,
        slice_instances,
    )
    from tomoloop.coco.particles import ParticleLinker

__all__ = [
    "CocoOptions",
    "CocoSummary",
    "Connectivity",
    "ParticleLinker",
    "Runs",
    "SliceInstances",
    "batch_instances",
    "batches",
    "check_out",
    "compress",
    "convert_stack",
    "instance_annotations",
    "label_runs",
    "mask_polygons",
    "prepare_out",
    "publish",
    "slice_instances",
    "slice_name",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
