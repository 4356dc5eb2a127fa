"""Benchmark: the GPU run (issue 20, target 7) — every figure beside its CPU baseline measured
in the same run, through tomoloop's own functions (the code the CPU tests run, given a device).

Paths, each timed on ``--device`` and, as the baseline, on the CPU with a smaller input
(throughputs per voxel or per iteration, so the ratio compares like with like):

- predict: a U-Net (default widths, 3 classes, random weights: speed does not depend on
  training) predicts a 1024² × 512 uint16 stack written here to a temporary TIFF and streamed
  from disk by :func:`tomoloop.inference.predict_volume` (labels + float16 entropy TIFFs);
  Mvox/s, target ≥ 100. The CPU baseline predicts the stack's first slices.
- bald: :func:`tomoloop.active.scoring.score_stack` scores 1024² slices of that stack by BALD
  (8 MC-dropout passes), as a round does; slices/s.
- unet-train: :func:`tomoloop.training.train` (AdamW, CUDA autocast + gradient scaler on a
  GPU), two epochs of 128² patches, batch 32; iterations/s of the second epoch (its time
  includes validating one slice).
- maskrcnn-train: :func:`tomoloop.adapters.detectron2.train`, Mask R-CNN R50-FPN (GroupNorm,
  from scratch; AMP on a GPU), batch 2 of 256² slices; iterations/s after the first.
- taufactor: :func:`tomoloop.metrics.structure.tortuosity` of the pore phase along x of a
  three-phase volume (256³ on the device, 96³ on the CPU); Mvox/s of the whole solve (a larger
  volume takes more sweeps, so the ratio understates the device). The device also solves the
  CPU's volume first (its warm-up): its τ must match the CPU's within 1 %.

Structures are smoothed random noise cut into pore / NMC / binder at fixed fractions; grey is
:func:`tomoloop.labels.synthetic.forward_model` of them. A path fails when it raises (or its τ
differs); the others still run, and the exit status is 1. ``--quick`` runs tiny sizes (a test
runs ``--device cpu --quick``). Prints one line per path; writes ``OUT/gpu.json``.

Run: ``bench/gpu.sh`` (= ``.venv/bin/python bench/gpu.py``) ``[--device cuda|cpu] [--quick]
[--paths predict,bald,unet-train,maskrcnn-train,taufactor] [--tile 256] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
import torch
from inference import FirstSlices
from scipy import ndimage

from tomoloop.active.scoring import ScoreOptions, score_stack
from tomoloop.inference.predict import default_overlap, predict_volume
from tomoloop.labels.synthetic import forward_model
from tomoloop.metrics.structure import tortuosity
from tomoloop.networks.registry import build_model
from tomoloop.particles.instances import coco_from_slices
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.window import percentile_window
from tomoloop.training import LabelledSlice, TrainConfig, TrainingError, resolve_device, train

OUT = Path(__file__).resolve().parent / "out"
PHASES = ("pore", "nmc", "cbd")
FRACTIONS = (0.45, 0.4, 0.15)  # pore, NMC, binder


@dataclass(frozen=True)
class Sizes:
    """Input sizes of one run: ``device`` sizes, then the CPU baseline's."""

    side: int  # slice side of the predicted stack
    depth: int  # slices of the predicted stack
    cpu_slices: int  # of those, predicted by the CPU baseline
    bald_slices: int
    cpu_bald_slices: int
    patch: int  # U-Net training
    batch: int
    steps: int
    cpu_steps: int
    rcnn_side: int
    rcnn_depth: int  # ResNet depth of the Mask R-CNN
    rcnn_norm: str  # GN (from scratch) or FrozenBN
    rcnn_iterations: int
    cpu_rcnn_iterations: int
    tau_side: int
    cpu_tau_side: int


FULL = Sizes(1024, 512, 8, 32, 2, 128, 32, 100, 4, 256, 50, "GN", 40, 4, 256, 96)
QUICK = Sizes(128, 6, 2, 2, 1, 32, 2, 3, 2, 64, 18, "FrozenBN", 1, 1, 24, 24)


@dataclass(frozen=True)
class Figure:
    """One measurement: ``value`` in ``unit`` and what it was measured on."""

    value: float
    unit: str
    on: str


def phases(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 labels (pore 0, NMC 1, binder 2) of smoothed noise cut at :data:`FRACTIONS`."""
    field = ndimage.gaussian_filter(
        np.random.default_rng(seed).standard_normal(shape, dtype=np.float32), sigma=2.0
    )
    cuts = np.quantile(field, np.cumsum(FRACTIONS)[:-1])
    return np.digitize(field, cuts).astype(np.uint8)


def write_stack(path: Path, side: int, depth: int) -> None:
    """A (depth, side, side) uint16 CT-like stack, written slice by slice from a 16 × 256²
    block tiled in y and x and cycled in z (so this process never holds the stack)."""
    block = min(side, 256)
    grey = forward_model(phases((16, block, block), seed=0))
    reps = side // block
    with tifffile.TiffWriter(path) as tif:
        for z in range(depth):
            tif.write(np.tile(grey[z % len(grey)], (reps, reps)), contiguous=True)


def unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", 1, len(PHASES))


def predict_figure(stack_path: Path, slices: int, tile: int, device: str, work: Path) -> Figure:
    """Mvox/s of :func:`predict_volume` over the first ``slices`` of the stack on disk."""
    model = unet().to(device)
    with open_stack(stack_path) as stack:
        window = percentile_window(stack)
        part = FirstSlices(stack, slices)
        started = time.perf_counter()
        predict_volume(
            model,
            part,
            work / "labels.tif",
            work / "entropy.tif",
            tile=tile,
            overlap=default_overlap(tile),
            batch=32,
            device=device,
            window=window,
        )
        seconds = time.perf_counter() - started
    voxels = slices * stack.shape[1] * stack.shape[2]
    return Figure(voxels / seconds / 1e6, "Mvox/s", f"{slices} × {stack.shape[1]}² slices")


def bald_figure(stack_path: Path, slices: int, tile: int, device: str) -> Figure:
    """Slices/s of BALD scoring (8 MC-dropout passes) of the stack's first slices."""
    model = unet().to(device)
    options = ScoreOptions(
        "bald", passes=8, tile=tile, overlap=default_overlap(tile), device=device
    )
    with open_stack(stack_path) as stack:
        started = time.perf_counter()
        scores = [
            f.score for _, f in score_stack(model, stack, options, indices=list(range(slices)))
        ]
        seconds = time.perf_counter() - started
    if not all(math.isfinite(s) for s in scores):
        raise RuntimeError(f"BALD scores {scores} are not all finite")
    return Figure(slices / seconds, "slices/s", f"{slices} × {stack.shape[1]}² slices, 8 passes")


def training_slices(side: int) -> list[LabelledSlice]:
    labels = phases((4, side, side), seed=1)
    grey = forward_model(labels).astype(np.float32)
    image = (grey - grey.min()) / (grey.max() - grey.min())
    return [LabelledSlice(i, lab) for i, lab in zip(image, labels, strict=True)]


def unet_train_figure(s: Sizes, steps: int, device: str, work: Path) -> Figure:
    """Training iterations/s of the U-Net, second epoch (the first warms up)."""
    slices = training_slices(max(2 * s.patch, 64))
    config = TrainConfig(
        epochs=2,
        patch=s.patch,
        batch=s.batch,
        patches_per_epoch=steps * s.batch,
        patience=0,
        overlap=default_overlap(s.patch),
    )
    folder = tempfile.mkdtemp(dir=work)
    result = train(unet(), slices[:3], slices[3:], len(PHASES), config, folder, device)
    last = result.history[-1]
    if not math.isfinite(last.train_loss):
        raise RuntimeError(f"U-Net training loss {last.train_loss}")
    amp = " AMP" if torch.device(device).type == "cuda" else ""
    return Figure(steps / last.seconds, "it/s", f"batch {s.batch} × {s.patch}²{amp}")


def maskrcnn_figure(s: Sizes, iterations: int, device: str, work: Path) -> Figure:
    """Mask R-CNN training iterations/s after the first iteration (data loader start-up)."""
    from tomoloop.adapters import detectron2

    labels = phases((4, s.rcnn_side, s.rcnn_side), seed=2)
    grey = forward_model(labels)
    folder = Path(tempfile.mkdtemp(dir=work))
    (folder / "images").mkdir()
    names = [f"z{z:03d}.png" for z in range(len(labels))]
    for name, image in zip(names, grey, strict=True):
        cv2.imwrite(str(folder / "images" / name), (image >> 8).astype(np.uint8))
    document = coco_from_slices(list(labels), names, list(PHASES), [1])
    (folder / "train.json").write_text(json.dumps(document))
    config = detectron2.MaskRCNNConfig(
        depth=s.rcnn_depth,
        norm=s.rcnn_norm,
        iterations=iterations + 1,
        batch=2,
        min_size=s.rcnn_side,
        max_size=s.rcnn_side,
        checkpoint_every=10**9,
    )
    ends: list[float] = []
    detectron2.train(
        folder / "train.json",
        folder / "images",
        config,
        folder / "run",
        torch.device(device),
        on_iteration=lambda i, loss: ends.append(time.perf_counter()),
    )
    return Figure(
        iterations / (ends[-1] - ends[0]),
        "it/s",
        f"R{s.rcnn_depth}-FPN {s.rcnn_norm}, batch 2 × {s.rcnn_side}²",
    )


def tau_figure(side: int, device: str) -> tuple[Figure, float]:
    """(Mvox/s of the pore's tortuosity solve along x of a side³ volume, τ)."""
    pore = phases((side, side, side), seed=3) == 0
    started = time.perf_counter()
    tau = tortuosity(pore, "x", device)
    seconds = time.perf_counter() - started
    return Figure(side**3 / seconds / 1e6, "Mvox/s", f"{side}³, τ {tau:.4f}"), tau


def taufactor_figures(s: Sizes, device: str) -> tuple[Figure, Figure]:
    """(device figure, CPU figure); the device's τ of the CPU's volume must agree (1 %)."""
    cpu, cpu_tau = tau_figure(s.cpu_tau_side, "cpu")
    _, check = tau_figure(s.cpu_tau_side, device)
    if abs(check - cpu_tau) > 0.01 * cpu_tau:
        raise RuntimeError(f"τ on {device} {check:.4f} differs from the CPU's {cpu_tau:.4f}")
    return tau_figure(s.tau_side, device)[0], cpu


TARGETS = {"predict": 100.0}  # Mvox/s (issue 20, target 7)


def run_path(name: str, measure: Callable[[], tuple[Figure, Figure]]) -> dict:
    """Measure one path; a failure is reported and recorded, not raised."""
    started = time.perf_counter()
    try:
        device, cpu = measure()
    except Exception as error:  # a benchmark path that fails must not hide the others
        traceback.print_exc(file=sys.stderr)
        print(f"{name:15s} FAILED: {type(error).__name__}: {error}", flush=True)
        return {"path": name, "ok": False, "error": f"{type(error).__name__}: {error}"}
    ratio = device.value / cpu.value
    target = TARGETS.get(name)
    verdict = ""
    if target is not None:
        met = "met" if device.value >= target else "NOT met"
        verdict = f" | target ≥ {target:g} {device.unit}: {met}"
    print(
        f"{name:15s} {device.value:10.3f} {device.unit:8s} ({device.on}) | CPU baseline "
        f"{cpu.value:9.3f} {cpu.unit} ({cpu.on}) | {ratio:6.1f}x{verdict}"
        f" | {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return {
        "path": name,
        "ok": True,
        "device": asdict(device),
        "cpu_baseline": asdict(cpu),
        "ratio": ratio,
        "target": target,
    }


def measures(s: Sizes, device: str, tile: int, work: Path) -> dict[str, Callable]:
    """Per path, a call returning its (device, CPU baseline) figures."""
    stack = work / "stack.tif"

    def ensure_stack() -> None:
        if not stack.exists():
            write_stack(stack, s.side, s.depth)

    def predict() -> tuple[Figure, Figure]:
        ensure_stack()
        cpu = predict_figure(stack, s.cpu_slices, tile, "cpu", work)
        predict_figure(stack, min(s.cpu_slices, s.depth), tile, device, work)  # warm-up
        return predict_figure(stack, s.depth, tile, device, work), cpu

    def bald() -> tuple[Figure, Figure]:
        ensure_stack()
        cpu = bald_figure(stack, s.cpu_bald_slices, tile, "cpu")
        return bald_figure(stack, s.bald_slices, tile, device), cpu

    return {
        "predict": predict,
        "bald": bald,
        "unet-train": lambda: (
            unet_train_figure(s, s.steps, device, work),
            unet_train_figure(s, s.cpu_steps, "cpu", work),
        ),
        "maskrcnn-train": lambda: (
            maskrcnn_figure(s, s.rcnn_iterations, device, work),
            maskrcnn_figure(s, s.cpu_rcnn_iterations, "cpu", work),
        ),
        "taufactor": lambda: taufactor_figures(s, device),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--paths", default="predict,bald,unet-train,maskrcnn-train,taufactor")
    parser.add_argument("--tile", type=int, default=256, help="prediction/scoring tile side")
    parser.add_argument("--out", type=Path, default=OUT, help="where gpu.json goes")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    wanted = args.paths.split(",")
    with tempfile.TemporaryDirectory(prefix="tomoloop-gpu-") as tmp:
        known = measures(sizes, args.device, args.tile, Path(tmp))
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            parser.error(f"unknown path {unknown[0]!r}: choose from {', '.join(known)}")
        try:
            device = resolve_device(args.device)
        except TrainingError as error:
            parser.error(f"{error} (--device cpu runs every path on the CPU)")
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(
            f"tomoloop GPU run on {args.device} ({name}); torch {torch.__version__}, "
            f"{torch.get_num_threads()} CPU threads, {platform.node()}"
            f"{', quick sizes' if args.quick else ''}",
            flush=True,
        )
        started = time.perf_counter()
        rows = [run_path(path, known[path]) for path in wanted]
    failed = [r["path"] for r in rows if not r["ok"]]
    total = time.perf_counter() - started
    print(f"{len(rows) - len(failed)} of {len(rows)} paths ran in {total:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"device": args.device, "quick": args.quick, "seconds": total, "paths": rows}
    (args.out / "gpu.json").write_text(json.dumps(document, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
