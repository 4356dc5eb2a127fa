"""The demo: what tomoloop does today, end to end, on a generated sample or the user's stacks.

sample (or user stacks) → validated stacks → COCO instances + semantic masks with a
train/val/test split → a PNG overlay of one slice → a summary (JSON and markdown).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tomoloop.coco import CocoOptions, CocoSummary, class_index_lut, convert_stack
from tomoloop.errors import TomoloopError
from tomoloop.metrics_coco import self_consistency_ap
from tomoloop.overlay import overlay
from tomoloop.phases import PhaseMap
from tomoloop.pngs import write_png
from tomoloop.stacks import (
    VoxelSize,
    open_stack,
    percentile_window,
    scan_label_values,
    to_uint8,
    write_stack,
)
from tomoloop.synthetic import ELECTRODE_PHASES, make_electrode


@dataclass(frozen=True)
class DemoInputs:
    """Where the demo's stacks come from: both paths, or neither (generate a sample)."""

    gray: Path | None = None
    labels: Path | None = None
    phases: PhaseMap | None = None
    instance_phases: tuple[str, ...] = ()
    voxel_size: VoxelSize | None = None


def generate_sample(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a synthetic NMC electrode (gray.tif uint16, labels.tif uint8) into ``folder``."""
    electrode = make_electrode(seed=seed)
    gray = write_stack(folder / "gray.tif", electrode.gray, electrode.voxel_size)
    labels = write_stack(folder / "labels.tif", electrode.labels, electrode.voxel_size)
    return gray, labels


def phase_fractions(labels_path: Path, phases: PhaseMap) -> dict[str, float]:
    """Volume fraction of each phase, read one z slice at a time."""
    counts = np.zeros(max(phases.values) + 1, dtype=np.int64)
    with open_stack(labels_path) as stack:
        for _, image in stack.iter_slices("z"):
            counts += np.bincount(image.ravel(), minlength=counts.size)[: counts.size]
        total = float(np.prod(stack.shape))
    return {name: float(counts[value] / total) for name, value in phases}


def _overlay_of_busiest(
    coco_file: Path, out: Path, gray_path: Path, labels_path: Path, phases: PhaseMap
) -> dict:
    """Overlay (PNG) of the slice with the most instances in ``coco_file``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco_file))
    image_id = max(coco.getImgIds(), key=lambda i: len(coco.getAnnIds(imgIds=[i])))
    info = coco.loadImgs([image_id])[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    instances = np.zeros((info["height"], info["width"]), dtype=np.int32)
    for k, ann in enumerate(anns, start=1):
        instances[mask_utils.decode(ann["segmentation"]).astype(bool)] = k
    with open_stack(gray_path) as gray, open_stack(labels_path) as labels:
        picture = overlay(
            to_uint8(gray.slice(info["axis"], info["index"]), percentile_window(gray)),
            class_index_lut(phases)[labels.slice(info["axis"], info["index"])],
            instances,
        )
    write_png(out, picture)
    return {"path": str(out), "axis": info["axis"], "index": info["index"], "instances": len(anns)}


def run_demo(
    out_dir: str | os.PathLike[str],
    inputs: DemoInputs = DemoInputs(),
    on_step: Callable[[str], None] = lambda _: None,
    on_slice: Callable[[int], None] | None = None,
) -> dict:
    """Run the demo into ``out_dir`` and return its summary (also written as JSON/markdown)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (inputs.gray is None) != (inputs.labels is None):
        raise TomoloopError("give both --gray and --labels, or neither to use the generated sample")
    if inputs.gray is None:
        on_step("generating a synthetic NMC electrode (porespy packing + CT forward model)")
        gray_path, labels_path = generate_sample(out / "sample")
        phases = ELECTRODE_PHASES
        wanted = ("nmc",)
    else:
        gray_path, labels_path = Path(inputs.gray), Path(inputs.labels)
        with open_stack(labels_path) as labels:
            phases = inputs.phases or PhaseMap.from_values(scan_label_values(labels))
        wanted = inputs.instance_phases
    on_step(f"converting {labels_path.name} to COCO (phases {phases})")
    with (
        open_stack(gray_path, inputs.voxel_size) as gray,
        open_stack(labels_path, inputs.voxel_size) as labels,
    ):
        options = CocoOptions(
            instance_phases=tuple(phases.value(p) for p in wanted),
            split=(0.8, 0.1, 0.1),
            particle_ids=True,
        )
        summary: CocoSummary = convert_stack(
            labels, out / "coco", phases, options, gray=gray, overwrite=True, on_slice=on_slice
        )
        shape, voxel = labels.shape, labels.voxel_size
    on_step("checking the export: COCOeval of the ground truth against itself")
    ap = self_consistency_ap(Path(summary.annotation_files["val"]))
    on_step("drawing the overlay")
    picture = _overlay_of_busiest(
        Path(summary.annotation_files["train"]),
        out / "overlay.png",
        gray_path,
        labels_path,
        phases,
    )
    result = {
        "gray": str(gray_path),
        "labels": str(labels_path),
        "shape_zyx": list(shape),
        "voxel_size_um": voxel,
        "phases": str(phases),
        "phase_fractions": phase_fractions(labels_path, phases),
        "coco": summary.to_dict(),
        "self_check_segm_ap": ap,
        "overlay": picture,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    (out / "summary.md").write_text(summary_markdown(result))
    return result


def summary_markdown(result: dict) -> str:
    """A short human-readable report of a demo run."""
    coco = result["coco"]
    fractions = ", ".join(f"{k} {v:.1%}" for k, v in result["phase_fractions"].items())
    lines = [
        "# tomoloop demo",
        "",
        f"- stacks: `{result['gray']}` + `{result['labels']}`, shape (z,y,x) "
        f"{tuple(result['shape_zyx'])}, voxel size {result['voxel_size_um']} µm",
        f"- phases: {result['phases']} — volume fractions {fractions}",
        f"- COCO: {coco['slices']} slices, instances "
        + ", ".join(f"{k} {v}" for k, v in coco["instances"].items())
        + f" ({coco['slices_per_s']:.0f} slices/s) in `{coco['out_dir']}`",
        f"- self-check: COCOeval segm AP of the ground truth against itself = "
        f"{result['self_check_segm_ap']:.3f}",
        f"- overlay: `{result['overlay']['path']}` ({result['overlay']['axis']} = "
        f"{result['overlay']['index']}, {result['overlay']['instances']} instances)",
        "",
    ]
    return "\n".join(lines)
