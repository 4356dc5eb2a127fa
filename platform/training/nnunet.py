"""A dataset version as an nnU-Net v2 raw dataset (``DatasetNNN_Name``), 2D: one case per
labelled slice.

2D because a tomoloop dataset is a set of labelled slices (the unit people label, score
and split), often a few slices of a large volume: as 3D cases the slices' train/val/test
split could not be kept, and nnU-Net would read whole volumes to learn from a few planes.

Layout (nnU-Net's ``dataset_format.md``): ``imagesTr/CASE_0000.tif`` (the slice's raw grey
values, the volume's dtype; float64 becomes float32), ``labelsTr/CASE.tif`` (uint8/uint16
class indices), ``imagesTs``/``labelsTs`` for the test split, ``dataset.json`` and
``splits_final.json`` (one fold: the dataset's train and val slices). Files are 2D TIFFs read
by nnU-Net's ``NaturalImage2DIO``. Labels are class indices (the phase map's order), as
nnU-Net needs consecutive labels from 0; class 0 is named ``background`` as it requires
(``tomoloop_phases`` keeps the real names); unlabelled pixels of sparse labels get nnU-Net's
``ignore`` label (the number of classes).
"""

from __future__ import annotations

import re

import numpy as np

from tomoloop.errors import TomoloopError
from tomoloop.labels.phases import IGNORE, PhaseMap

FOLDER = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_\-]+$")
FILE_ENDING = ".tif"
READER = "NaturalImage2DIO"


def check_folder_name(name: str) -> None:
    """Raise TomoloopError unless ``name`` is an nnU-Net dataset folder name."""
    if not FOLDER.match(name):
        raise TomoloopError(
            f"--out folder {name!r} is not an nnU-Net dataset name: call it DatasetNNN_Name "
            "(three digits, e.g. Dataset501_nmc)"
        )


def case_name(volume: str, axis: str, index: int) -> str:
    """A slice's case identifier, e.g. ``nmc_z0007``."""
    return f"{volume}_{axis}{index:04d}"


def nnunet_labels(phases: PhaseMap, sparse: bool) -> dict[str, int]:
    """dataset.json ``labels``: class 0 as ``background``, the others by phase name, then
    ``ignore`` (the number of classes) if some label is sparse."""
    labels = {("background" if k == 0 else name): k for k, name in enumerate(phases.names)}
    if sparse:
        labels["ignore"] = len(phases)
    return labels


def channel_name(modality: str) -> str:
    """nnU-Net's channel name, which picks its normalisation: ``CT`` (clipped to the
    foreground's percentiles, Hounsfield-like) for X-ray CT, z-score otherwise."""
    return "CT" if "ct" in modality.lower() else modality or "zscore"


def dataset_json(
    phases: PhaseMap, training: int, sparse: bool, modality: str, description: str
) -> dict:
    """nnU-Net v2's dataset.json for ``training`` 2D cases."""
    return {
        "channel_names": {"0": channel_name(modality)},
        "labels": nnunet_labels(phases, sparse),
        "numTraining": training,
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": READER,
        "description": description,
        "tomoloop_phases": str(phases),
    }


def nnunet_label(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """An (h, w) class-index mask (uint8 with :data:`IGNORE` unlabelled, or uint16) with
    unlabelled pixels set to nnU-Net's ignore label ``n_classes``."""
    if classes.dtype != np.uint8:
        return classes
    return np.where(classes == IGNORE, np.uint8(n_classes), classes).astype(np.uint8)


def nnunet_image(image: np.ndarray) -> np.ndarray:
    """A slice's grey values as stored: float64 becomes float32 (NaturalImage2DIO reads
    what tifffile writes; nnU-Net computes in float32)."""
    return image.astype(np.float32) if image.dtype == np.float64 else image
