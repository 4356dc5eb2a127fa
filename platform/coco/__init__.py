"""Binarized / multiphase label stacks → COCO instance annotations and semantic masks."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.coco.convert import (
        CocoOptions,
        CocoSummary,
        Connectivity,
        ParticleLinker,
        Runs,
        SliceInstances,
        batch_instances,
        batches,
        check_new,
        check_out,
        class_index_lut,
        compress,
        convert_stack,
        instance_annotations,
        label_runs,
        mask_polygons,
        prepare_out,
        publish,
        slice_instances,
        slice_name,
    )

__all__ = [
    "CocoOptions",
    "CocoSummary",
    "Connectivity",
    "ParticleLinker",
    "Runs",
    "SliceInstances",
    "batch_instances",
    "batches",
    "check_new",
    "check_out",
    "class_index_lut",
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CocoOptions": "tomoloop.coco.convert",
        "CocoSummary": "tomoloop.coco.convert",
        "Connectivity": "tomoloop.coco.convert",
        "ParticleLinker": "tomoloop.coco.convert",
        "Runs": "tomoloop.coco.convert",
        "SliceInstances": "tomoloop.coco.convert",
        "batch_instances": "tomoloop.coco.convert",
        "batches": "tomoloop.coco.convert",
        "check_new": "tomoloop.coco.convert",
        "check_out": "tomoloop.coco.convert",
        "class_index_lut": "tomoloop.coco.convert",
        "compress": "tomoloop.coco.convert",
        "convert_stack": "tomoloop.coco.convert",
        "instance_annotations": "tomoloop.coco.convert",
        "label_runs": "tomoloop.coco.convert",
        "mask_polygons": "tomoloop.coco.convert",
        "prepare_out": "tomoloop.coco.convert",
        "publish": "tomoloop.coco.convert",
        "slice_instances": "tomoloop.coco.convert",
        "slice_name": "tomoloop.coco.convert",
    },
)
