"""Benchmark: segmentation quality of every architecture after brief CPU training.

The MATBOX NMC cathode labels (pore, NMC, carbon binder) are forward-modelled to CT-like grayscale
(phase grey levels, PSF blur, noise; the binder faint as X-ray CT sees it, Tabassum et al. n.d.,
App. §II; docs/references.md). Slices are split into contiguous train / val / test blocks. Each
architecture is trained with the same budget and seed, then scored on the test slices (metrics of
Tabassum et al. n.d. and Quenum et al. 2023). Baseline in the same run: multi-Otsu thresholding (3
classes, ordered by grey).

Run: ``.venv/bin/python bench/seg_quality.py [--epochs 12] [--archs unet,ynet]``.
Input: ``../shared/data/matbox_nmc_cbd_labels.tif``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.filters import threshold_multiotsu

from tomoloop.labels.synthetic import forward_model
from tomoloop.metrics.semantic import confusion_matrix, scores
from tomoloop.networks.registry import MODELS, build_model
from tomoloop.training.data import LabelledSlice
from tomoloop.training.evaluation import evaluate
from tomoloop.training.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
CLASSES = ("pore", "nmc", "cbd")
SIDE = 128


def slices() -> dict[str, list[LabelledSlice]]:
    """Train / val / test slices (contiguous z blocks, 4-slice gaps) of a 128² crop."""
    labels = tifffile.imread(DATA / "matbox_nmc_cbd_labels.tif")[:, :SIDE, :SIDE]
    gray = forward_model(labels).astype(np.float32)
    lo, hi = np.percentile(gray, (0.5, 99.5))
    image = np.clip((gray - lo) / (hi - lo), 0, 1).astype(np.float32)
    n = labels.shape[0]
    parts = {"train": range(0, int(0.6 * n)), "val": range(int(0.6 * n) + 4, int(0.75 * n))}
    parts["test"] = range(int(0.75 * n) + 4, n)
    return {
        split: [LabelledSlice(image[z], labels[z]) for z in indices]
        for split, indices in parts.items()
    }


def otsu_baseline(test: list[LabelledSlice]) -> dict:
    """Multi-Otsu on the test slices: pore < cbd < nmc by grey level."""
    volume = np.stack([s.image for s in test])
    low, high = threshold_multiotsu(volume, classes=3)
    predicted = np.select([volume < low, volume < high], [0, 2], default=1)
    result = scores(confusion_matrix(np.stack([s.labels for s in test]), predicted, 3))
    return {"arch": "multi-Otsu", "mIoU": result.miou, "mDSC": result.mdsc, "dice": result.dice}


def bench_arch(arch: str, data: dict, epochs: int) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, 1, 3)
    config = TrainConfig(epochs=epochs, patch=64, batch=8, patches_per_epoch=128, patience=0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = train(model, data["train"], data["val"], 3, config, folder)
    seconds = time.perf_counter() - t0
    tested = evaluate(model, data["test"], 3, 64, 16)
    return {
        "arch": arch,
        "mIoU": tested.scores.miou,
        "mDSC": tested.scores.mdsc,
        "fIU": tested.scores.fiu,
        "dice": tested.scores.dice,
        "fractions": tested.predicted_fractions,
        "truth_fractions": tested.truth_fractions,
        "best_epoch": result.best_epoch,
        "train_s": seconds,
        "ms_per_patch": 1000 * tested.seconds_per_patch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--archs", default=",".join(MODELS))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    data = slices()
    print({k: len(v) for k, v in data.items()}, "slices of", f"{SIDE}²", flush=True)
    rows = [otsu_baseline(data["test"])]
    for arch in args.archs.split(","):
        rows.append(bench_arch(arch, data, args.epochs))
        print(f"{arch}: mIoU {rows[-1]['mIoU']:.3f} in {rows[-1]['train_s']:.0f} s", flush=True)
    header = f"| model | mIoU | mDSC | Dice {' / '.join(CLASSES)} | vs Otsu mIoU | train s |"
    print(f"\n{header} ms/patch |")
    print("|---|---|---|---|---|---|---|")
    baseline = rows[0]["mIoU"]
    for r in rows:
        dice = " / ".join(f"{d:.3f}" for d in r["dice"])
        print(
            f"| {r['arch']} | {r['mIoU']:.3f} | {r['mDSC']:.3f} | {dice} | "
            f"{r['mIoU'] / baseline:.2f}× | {r.get('train_s', 0):.0f} | "
            f"{r.get('ms_per_patch', 0):.1f} |"
        )
    (OUT / "seg_quality.json").write_text(
        json.dumps(rows, indent=2, default=lambda a: np.asarray(a).tolist())
    )


if __name__ == "__main__":
    main()
