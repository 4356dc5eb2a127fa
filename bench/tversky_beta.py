"""Benchmark: which side of the Tversky loss should weigh 0.7 for the carbon binder?

Quenum et al. 2023 print eq. 1 with β on the false positives; the sources they cite (Salehi et
al. 2017; Abraham & Khan 2018) put the larger weight on the false negatives to favour recall of a
thin phase. The MATBOX NMC cathode of ``bench/seg_quality.py`` (the binder faint, near the pore's
grey) trains a U-Net with ``--loss tversky`` at β = 0.7 (false positives weigh 0.7) and β = 0.3
(false negatives weigh 0.7), same budget and seeds; the binder's IoU, Dice, recall, precision and
predicted volume fraction on the test slices decide (docs/seeds.md).

Run: ``.venv/bin/python bench/tversky_beta.py [--epochs 8] [--seeds 0,1] [--base 16]``.
Input: ``../shared/data/matbox_nmc_cbd_labels.tif``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seg_quality import slices

from tomoloop.networks.registry import build_model
from tomoloop.training.evaluation import evaluate
from tomoloop.training.trainer import TrainConfig, train

BINDER = 2


def binder_scores(beta: float, seed: int, data: dict, epochs: int, base: int) -> dict:
    """Train a U-Net with the Tversky loss at ``beta``; the binder's scores on the test slices."""
    torch.manual_seed(seed)
    model = build_model("unet", 1, 3, base=base)
    config = TrainConfig(
        epochs=epochs, patch=64, batch=8, patches_per_epoch=128, patience=0, seed=seed,
        loss="tversky", tversky_beta=beta,
    )  # fmt: skip
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        train(model, data["train"], data["val"], 3, config, folder)
    tested = evaluate(model, data["test"], 3, 64, 16)
    c = tested.confusion.astype(np.float64)
    tp = c[BINDER, BINDER]
    return {
        "beta": beta,
        "seed": seed,
        "iou": float(tested.scores.iou[BINDER]),
        "dice": float(tested.scores.dice[BINDER]),
        "recall": float(tp / c[BINDER].sum()),
        "precision": float(tp / max(c[:, BINDER].sum(), 1)),
        "fraction": float(tested.predicted_fractions[BINDER]),
        "truth": float(tested.truth_fractions[BINDER]),
        "mIoU": tested.scores.miou,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--base", type=int, default=16, help="U-Net channels at full size")
    args = parser.parse_args()
    data = slices()
    rows = []
    for seed in map(int, args.seeds.split(",")):
        for beta in (0.7, 0.3):
            rows.append(binder_scores(beta, seed, data, args.epochs, args.base))
            print(rows[-1], flush=True)
    print("\n| β (weight of false positives) | binder IoU | Dice | recall | precision "
          "| binder fraction (truth) | mIoU |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for beta in (0.7, 0.3):
        mine = [r for r in rows if r["beta"] == beta]

        def cell(key: str, rows: list = mine) -> str:
            values = [r[key] for r in rows]
            return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

        print(
            f"| {beta} | {cell('iou')} | {cell('dice')} | {cell('recall')} | "
            f"{cell('precision')} | {cell('fraction')} ({mine[0]['truth']:.3f}) | {cell('mIoU')} |"
        )


if __name__ == "__main__":
    main()
