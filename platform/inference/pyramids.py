"""A volume prediction written as OME-Zarr pyramids instead of TIFFs."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from tomoloop.inference.predict import VolumePrediction
from tomoloop.stacks.ngff import stack_to_ome_zarr
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.stack import Stack


def predict_to_ome_zarr(
    predict: Callable[[Path, Path | None], VolumePrediction],
    gray: Stack,
    class_names: Mapping[int, str],
    labels_target: Path,
    uncertainty_target: Path | None = None,
) -> None:
    """Run ``predict`` (labels TIFF path, entropy TIFF path or None → what it wrote, as
    :func:`tomoloop.inference.predict.predict_volume` does) into a scratch folder beside
    ``labels_target``, then write the labels as an OME-Zarr label image named by
    ``class_names`` (class index → name) and the entropy as a float32 OME-Zarr image, both
    with the grey stack's voxel size (:func:`tomoloop.stacks.ngff.write_ome_zarr`).
    """
    labels_target.absolute().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=labels_target.absolute().parent, prefix=".predict.") as d:
        scratch = Path(d)
        entropy = scratch / "uncertainty.tif" if uncertainty_target is not None else None
        result = predict(scratch / "labels.tif", entropy)
        with open_stack(result.labels) as labels:
            stack_to_ome_zarr(labels, labels_target, class_names, gray.voxel_size)
        if result.uncertainty is not None and uncertainty_target is not None:
            with open_stack(result.uncertainty) as unsure:
                stack_to_ome_zarr(unsure, uncertainty_target, None, gray.voxel_size, np.float32)
