"""What tomoloop made, in the formats other tools read: a dataset version's best labels
as label volumes (OME-Zarr or TIFF), as an nnU-Net v2 raw dataset, and a registered
network as TorchScript and ONNX. Each output folder appears whole or not at all.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile

from tomoloop.db.entities import DatasetVersion, Volume
from tomoloop.errors import TomoloopError
from tomoloop.labels.masks import decode_class_mask
from tomoloop.labels.volume_labels import label_dtype, paint_slice, unlabelled_value
from tomoloop.networks.export import export_network
from tomoloop.outputs import new_folder
from tomoloop.services.context import Services
from tomoloop.services.datasets import dataset_phases, dataset_refs
from tomoloop.services.models import load_registered_model
from tomoloop.stacks.ngff import write_ome_zarr
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.stack import axis_named
from tomoloop.stacks.tiff import write_stack
from tomoloop.training.data import SliceRef
from tomoloop.training.nnunet import (
    case_name,
    check_folder_name,
    dataset_json,
    nnunet_image,
    nnunet_label,
)

VolumeFormat = Literal["ome-zarr", "tiff"]
SUFFIX: dict[str, str] = {"ome-zarr": ".ome.zarr", "tiff": ".tif"}


def _volumes_of(services: Services, refs: list[SliceRef]) -> dict[str, Volume]:
    """The registered volume of each stack path the refs name."""
    paths = {ref.path for ref in refs}
    return {v.path: v for v in services.registry.volumes() if v.path in paths}


def _voxel_size(volume: Volume) -> tuple[float, float, float] | None:
    """A registered volume's (z, y, x) voxel size in µm, None where unknown."""
    size = (volume.voxel_z_um, volume.voxel_y_um, volume.voxel_x_um)
    return None if None in size else size  # type: ignore[return-value]


def export_labels(
    services: Services, dataset: DatasetVersion, out_dir: Path, fmt: VolumeFormat
) -> dict:
    """A new folder ``out_dir`` with one (z, y, x) label volume per volume of the dataset
    version (``NAME.ome.zarr`` or ``NAME.tif``): each labelled slice's best label in the
    phase map's values, every other voxel :func:`unlabelled_value` (a volume nobody
    labelled yet is written all unlabelled, ``slices`` 0); the voxel size from the
    registry. Returns what was written."""
    phases = dataset_phases(services, dataset)
    groups = _grouped(dataset_refs(services, dataset))
    unlabelled = unlabelled_value(phases)
    written = []
    with new_folder("--out", out_dir) as tmp:
        for volume in services.registry.dataset_volumes(dataset.id):
            group = groups.get(volume.path, [])
            shape = (volume.shape_z, volume.shape_y, volume.shape_x)
            with tempfile.TemporaryDirectory(dir=tmp) as scratch:
                labels = np.lib.format.open_memmap(
                    Path(scratch) / "labels.npy", "w+", label_dtype(phases), shape
                )
                labels[:] = unlabelled
                for ref in group:
                    paint_slice(labels, ref.axis, ref.index, decode_class_mask(ref.mask), phases)
                target = tmp / f"{volume.name}{SUFFIX[fmt]}"
                if fmt == "ome-zarr":
                    write_ome_zarr(
                        target, iter(labels), shape, labels.dtype, _voxel_size(volume),
                        dict(zip(phases.values, phases.names, strict=True)), unlabelled,
                    )  # fmt: skip
                else:
                    write_stack(target, labels, _voxel_size(volume))
            written.append({"volume": volume.name, "file": target.name, "slices": len(group)})
    return {
        "dataset": dataset.name,
        "version": dataset.version,
        "format": fmt,
        "out_dir": str(out_dir),
        "phases": str(phases),
        "unlabelled": unlabelled,
        "volumes": written,
    }


def export_nnunet(services: Services, dataset: DatasetVersion, out_dir: Path) -> dict:
    """A new nnU-Net v2 raw dataset folder ``out_dir`` (named ``DatasetNNN_Name``) from a
    dataset version (:mod:`tomoloop.training.nnunet`): one 2D case per labelled slice,
    train and val slices in ``imagesTr``/``labelsTr`` (``splits_final.json`` keeps them
    apart; without val slices it is not written, and nnU-Net makes its own folds), test
    slices in ``imagesTs``/``labelsTs``. Returns what was written."""
    check_folder_name(out_dir.name)
    phases = dataset_phases(services, dataset)
    refs = dataset_refs(services, dataset)
    _check_training_cases(dataset, refs)
    volumes = _volumes_of(services, refs)
    splits: dict[str, list[str]] = defaultdict(list)
    sparse = False
    with new_folder("--out", out_dir) as tmp:
        for path, group in _grouped(refs).items():
            with open_stack(path) as stack:
                for ref in group:
                    case = case_name(volumes[path].name, ref.axis, ref.index)
                    part = "Ts" if ref.split == "test" else "Tr"
                    classes = decode_class_mask(ref.mask)
                    sparse = sparse or "labelled" in ref.mask
                    image = stack.slice(axis_named(ref.axis), ref.index)
                    _write_2d(tmp / f"images{part}" / f"{case}_0000.tif", nnunet_image(image))
                    label = nnunet_label(classes, len(phases))
                    _write_2d(tmp / f"labels{part}" / f"{case}.tif", label)
                    splits[ref.split].append(case)
        modality = next(iter(volumes.values())).modality if volumes else ""
        training = len(splits["train"]) + len(splits["val"])
        description = f"tomoloop dataset {dataset.name}@{dataset.version}"
        document = dataset_json(phases, training, sparse, modality, description)
        (tmp / "dataset.json").write_text(json.dumps(document, indent=2))
        if splits["val"]:
            folds = [{"train": sorted(splits["train"]), "val": sorted(splits["val"])}]
            (tmp / "splits_final.json").write_text(json.dumps(folds, indent=2))
    return {
        "dataset": dataset.name,
        "version": dataset.version,
        "out_dir": str(out_dir),
        "labels": document["labels"],
        "cases": {split: len(splits[split]) for split in ("train", "val", "test")},
        "splits_final": bool(splits["val"]),
    }


def _check_training_cases(dataset: DatasetVersion, refs: list[SliceRef]) -> None:
    """Refuse a dataset version without a labelled train or val slice: nnU-Net trains on
    ``imagesTr`` and cannot plan without a case there.

    Raises:
        TomoloopError: naming the dataset version and what to label.
    """
    if not any(ref.split in ("train", "val") for ref in refs):
        raise TomoloopError(
            f"dataset {dataset.name}@{dataset.version} has no labelled train or val slice, "
            "and nnU-Net trains on those: label some of its train slices first"
        )


def _grouped(refs: list[SliceRef]) -> dict[str, list[SliceRef]]:
    """Refs by stack path, so each stack is opened once."""
    by_path: dict[str, list[SliceRef]] = defaultdict(list)
    for ref in refs:
        by_path[ref.path].append(ref)
    return by_path


def _write_2d(path: Path, image: np.ndarray) -> None:
    """One (h, w) image as a 2D TIFF, its folder made if needed."""
    path.parent.mkdir(exist_ok=True)
    tifffile.imwrite(path, image)


def export_model(
    services: Services, model_id: int, out_dir: Path, formats: tuple[str, ...]
) -> dict:
    """A new folder ``out_dir`` with registered semantic model ``model_id`` as
    ``model.pt`` (TorchScript) and/or ``model.onnx``, each checked against PyTorch
    (:func:`tomoloop.networks.export.export_network`), and ``model.json`` (the spec: input
    (N, C, tile, tile) in [0, 1], class names; the differences found). Returns model.json."""
    network, spec, version = load_registered_model(services, model_id, "cpu")
    exports = [export_network(network, spec, fmt) for fmt in formats]
    files = {"torchscript": "model.pt", "onnx": "model.onnx"}
    document = {
        "model_version": model_id,
        "name": version.name,
        "spec": {**asdict(spec), "class_names": list(spec.class_names)},
        "input": ["N", spec.in_channels, spec.tile, spec.tile],
        "input_range": [0.0, 1.0],
        "output": ["N", spec.n_classes, spec.tile, spec.tile],
        "files": {e.format: files[e.format] for e in exports},
        "max_difference": {e.format: e.difference for e in exports},
    }
    with new_folder("--out", out_dir) as tmp:
        for exported in exports:
            (tmp / files[exported.format]).write_bytes(exported.data)
        (tmp / "model.json").write_text(json.dumps(document, indent=2))
    return {**document, "out_dir": str(out_dir)}
