"""3D particles of a grey stack with a registered Mask R-CNN (Daemi et al. 2022;
docs/references.md): predict on z, y and x slices → fuse, clean, watershed → measure,
flag slice artefacts and partial particles → score the kept ones with a flaw classifier
→ a report folder; and the flaw classifier registered once trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tomoloop.adapters import detectron2
from tomoloop.db.registry import NewMetric
from tomoloop.inference.predict import normalise
from tomoloop.particles.flaws import (
    FlawNet,
    FlawTrainConfig,
    FlawTrainResult,
    flaw_volume,
    is_flawed,
    particle_scores,
    save_classifier,
)
from tomoloop.particles.instances import grey_uint8, particle_category
from tomoloop.particles.reassembly import (
    ReassemblyOptions,
    analyse,
    kept_labels,
    particle_rows,
    particle_summary,
    reassemble,
    write_particle_report,
)
from tomoloop.services.context import Services
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.window import percentile_window


@dataclass(frozen=True)
class GreyVolume:
    """A grey stack as 8-bit (z, y, x), its voxel size in µm (1 µm when it has none)."""

    path: str
    voxels: np.ndarray
    voxel_size: tuple[float, float, float]
    has_voxel_size: bool


@dataclass(frozen=True)
class FlawClassifierTrained:
    """A registered flaw classifier and how it trained."""

    model_version: int
    val_accuracy: float
    epochs: int
    train_slices: int
    val_slices: int
    checkpoint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_grey(gray: str, voxel_size: tuple[float, float, float] | None) -> GreyVolume:
    """The stack at ``gray`` normalised by its percentile window to 8 bits."""
    with open_stack(gray, voxel_size) as stack:
        volume = grey_uint8(normalise(stack.read(), percentile_window(stack)))
        z, y, x = stack.voxel_size or (1.0, 1.0, 1.0)
    return GreyVolume(gray, volume, (z, y, x), stack.voxel_size is not None)


def particle_labels(
    net: detectron2.MaskRCNN,
    grey: GreyVolume,
    axes: str,
    phase: str | None,
    options: ReassemblyOptions,
) -> np.ndarray:
    """The 3D particle labels (z, y, x) of the model's ``phase`` category: its masks on
    every ``axes`` slice fused by :func:`reassemble`."""
    category = particle_category(net.categories, phase)
    masks = detectron2.axis_masks(net, grey.voxels, tuple(axes), classes=[category])
    labels: np.ndarray = reassemble(masks, options)
    return labels


def particle_report(
    grey: GreyVolume,
    labels: np.ndarray,
    classifier: FlawNet | None,
    header: dict[str, Any],
    bin_um: float,
    out_dir: Path,
    overwrite: bool,
    device: torch.device,
) -> dict[str, Any]:
    """Measure the particles, score the kept ones with ``classifier`` (None: no flaw
    figures), and write labels, particles.csv, the size distribution, the flaw volume and
    the summary (``header`` first) into ``out_dir`` (all or nothing); the summary, with
    ``out_dir``. Partial particles by ``header["partial_rule"]`` (default ``slice``)."""
    analysis = analyse(labels, grey.voxel_size, header.get("partial_rule", "slice"))
    boxes = {p.id: (p.z0, p.z1) for p in analysis.kept}
    scores = (
        None
        if classifier is None
        else particle_scores(classifier, grey.voxels, labels, boxes, device)
    )
    summary = {
        **header,
        "voxel_size_um": list(grey.voxel_size),
        **particle_summary(analysis, scores, bin_um),
    }
    kept = kept_labels(labels, analysis)
    flaws = (
        None
        if scores is None
        else flaw_volume(grey.voxels, kept, {pid for pid, s in scores.items() if is_flawed(s)})
    )
    out = write_particle_report(
        out_dir, kept, grey.voxel_size, particle_rows(analysis, scores), summary, flaws, overwrite
    )
    return {**summary, "out_dir": str(out)}


def register_flaw_classifier(
    services: Services,
    name: str,
    result: FlawTrainResult,
    config: FlawTrainConfig,
    slices_dir: str,
    val_fraction: float,
    counts: tuple[int, int],
) -> FlawClassifierTrained:
    """The trained classifier stored and registered as model ``name`` (architecture
    flawnet) with its val accuracy; ``counts``: (train, val) slices it saw."""
    checkpoint = services.store.put_bytes(save_classifier(result.net, config), ".pt")
    request = {"slices": slices_dir, "train": asdict(config), "val_fraction": val_fraction}
    model_id = services.registry.register_model(
        name,
        "flawnet",
        "torch",
        None,
        config=request,
        checkpoint_uri=checkpoint.key,
        checkpoint_sha256=checkpoint.sha256,
        metrics=[NewMetric("accuracy", result.val_accuracy, "val")],
    )
    return FlawClassifierTrained(
        model_id, result.val_accuracy, result.epochs, counts[0], counts[1], checkpoint.key
    )
