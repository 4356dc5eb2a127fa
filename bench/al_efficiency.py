"""Benchmark: label efficiency of the query strategies on the MATBOX NMC cathode.

The MATBOX labels (pore, NMC, carbon binder; a 128² crop of all 251 slices) are
forward-modelled to CT-like grayscale as in ``bench/seg_quality.py``. The direct oracle
answers from the labels (no server). Per seed every strategy starts from the same random
slices; random and foreground-aware random are the control arms. Target (issue 7): the
best strategy reaches 95 % of the full-data mIoU with at most half the labelled slices
random needs.

Run: ``.venv/bin/python bench/al_efficiency.py [--seeds 3] [--rounds 4] [--budget 4]``;
writes ``bench/out/al_efficiency.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import tifffile

from tomoloop.active.label_efficiency import EfficiencySetup, efficiency, stack_split
from tomoloop.labels.phases import PhaseMap
from tomoloop.labels.synthetic import forward_model
from tomoloop.report.plots import plot_efficiency
from tomoloop.stacks.tiff import open_stack
from tomoloop.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
SIDE = 128
STRATEGIES = "random,foreground_random,entropy,bald,coreset,hybrid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--initial", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    labels = tifffile.imread(DATA / "matbox_nmc_cbd_labels.tif")[:, :SIDE, :SIDE]
    tifffile.imwrite(OUT / "matbox_crop_labels.tif", labels)
    tifffile.imwrite(OUT / "matbox_crop_gray.tif", forward_model(labels))
    setup = EfficiencySetup(
        tuple(args.strategies.split(",")),
        args.seeds,
        args.rounds,
        args.budget,
        args.initial,
        train=TrainConfig(epochs=args.epochs, patch=64, patches_per_epoch=128, patience=0),
    )
    start = time.perf_counter()
    with (
        open_stack(OUT / "matbox_crop_gray.tif") as gray,
        open_stack(OUT / "matbox_crop_labels.tif") as truth,
    ):
        split = stack_split(gray, truth, PhaseMap.parse("pore=0,nmc=1,cbd=2"))
    document = efficiency(
        split,
        setup,
        on_curve=lambda name, seed, curve: print(
            f"{name} seed {seed}: " + ", ".join(f"{n}→{m:.3f}" for n, m in curve), flush=True
        ),
    )
    document["seconds"] = time.perf_counter() - start
    document["plot"] = str(plot_efficiency(document, OUT / "al_efficiency.png"))
    (OUT / "al_efficiency.json").write_text(json.dumps(document, indent=2))
    full = document["full_data_miou"]
    print(
        f"\nfull data ({document['pool_slices']} slices): mIoU {full:.4f}; 95 % = {0.95 * full:.4f}"
    )
    random_needs = document["strategies"].get("random", {}).get("labels_to_95")
    print(f"{'strategy':<18} {'labels to 95 %':>14} {'vs random':>10} {'AUC':>8}")
    for name, result in document["strategies"].items():
        n = result["labels_to_95"]
        ratio = f"{n / random_needs:.2f}" if n and random_needs else "—"
        print(f"{name:<18} {n!s:>14} {ratio:>10} {result['auc']:>8.4f}")
    print(f"mean seed curves saved to {OUT / 'al_efficiency.json'} ({document['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
