"""Benchmark: the flaw classifier tomoloop trains by default against the published one.

Daemi et al. 2022 (§4) classify a particle's slices with VGG16 (filter counts 64 … 512, two
3 × 3 convolutions each, no batch normalisation, a dense head) and call a particle flawed when
its slices' mean score reaches 0.4. tomoloop's default (``FlawNet`` widths 16 … 128, batch
normalisation, global max pooling) is 17× less convolution work per slice. Both train here on
the same synthetic particles (``tomoloop.labels.synthetic.cracked_particles``, made harder
than the unit tests' set: a blurred, low-contrast crack under more noise, see ``harder``),
with the same epochs, patience and seeds; accuracy is measured per slice and per particle
(the paper's rule) on particles neither saw, with the time each took.

Run: ``.venv/bin/python bench/flaws.py [--particles 16] [--epochs 40] [--seeds 0,1]``.
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from tomoloop.labels.synthetic import cracked_particles
from tomoloop.particles.flaws import (
    SEED_FLAWS,
    FlawTrainConfig,
    is_flawed,
    labelled_inputs,
    slice_scores,
    train_classifier,
)

OUT = Path(__file__).resolve().parent / "out"
ARMS = {  # the paper gives no learning rate for the classifier: Adam's 1e-3 and 1e-4
    "default": {},
    "seed": SEED_FLAWS,  # VGG16 as Daemi et al. 2022 (§ Classifier Training) describe it
    "seed-lr1e-4": {**SEED_FLAWS, "lr": 1e-4},
}


def harder(grey: np.ndarray, seed: int, blur: float, noise: float) -> np.ndarray:
    """The generator's uint8 grey volume blurred by ``blur`` voxels (σ) with Gaussian noise
    of ``noise`` grey levels added: a thin crack that is no longer black on white."""
    rng = np.random.default_rng([seed, 7])
    smooth = gaussian_filter(grey.astype(np.float32), blur)
    return np.clip(smooth + rng.normal(0, noise, grey.shape), 0, 255).astype(np.uint8)


def particle_set(
    n: int, seed: int, blur: float, noise: float
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(slices (k, 128, 128), slice labels (k,), slices per particle) of ``n`` particles,
    every other one cracked."""
    cracked = [i % 2 == 0 for i in range(n)]
    grey, labels, _ = cracked_particles((28, 28, 28 * n), 11, cracked, seed=seed)
    return labelled_inputs(harder(grey, seed, blur, noise), labels, cracked)


def accuracies(net, test, device) -> tuple[float, float]:
    """(slice accuracy, particle accuracy by the mean-score ≥ 0.4 rule) on ``test``."""
    images, labels, counts = test
    scores = slice_scores(net, images, device)
    per_slice = float(((scores >= 0.5) == (labels == 1)).mean())
    bounds = np.cumsum([0, *counts])
    hits = [is_flawed(scores[a:b]) == bool(labels[a]) for a, b in pairwise(bounds)]
    return per_slice, float(np.mean(hits))


def run_arm(name: str, seed: int, data: dict, epochs: int, patience: int, device) -> dict:
    config = FlawTrainConfig(epochs=epochs, patience=patience, seed=seed, **ARMS[name])
    start = time.perf_counter()
    result = train_classifier(data["train"][:2], data["val"][:2], config, device)
    seconds = time.perf_counter() - start
    per_slice, per_particle = accuracies(result.net, data["test"], device)
    return {
        "arm": name,
        "seed": seed,
        "val_accuracy": result.val_accuracy,
        "test_slice_accuracy": per_slice,
        "test_particle_accuracy": per_particle,
        "epochs": result.epochs,
        "seconds": seconds,
        "seconds_per_epoch": seconds / result.epochs,
        "parameters": sum(p.numel() for p in result.net.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=16, help="training particles")
    parser.add_argument("--test-particles", type=int, default=16, help="val and test, each")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=15, help="Daemi et al. 2022: 15")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names")
    parser.add_argument("--blur", type=float, default=1.5, help="σ in voxels")
    parser.add_argument("--noise", type=float, default=80.0, help="grey levels (σ)")
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"--arms: unknown {sorted(unknown)}; choose from {list(ARMS)}")
    device = torch.device("cpu")
    seeds = [int(s) for s in args.seeds.split(",")]
    test_n = args.test_particles
    data = {
        "train": particle_set(args.particles, 100, args.blur, args.noise),
        "val": particle_set(test_n, 101, args.blur, args.noise),
        "test": particle_set(test_n, 102, args.blur, args.noise),
    }
    print(
        f"slices: train {len(data['train'][1])}, val {len(data['val'][1])}, "
        f"test {len(data['test'][1])} ({test_n} particles); crack blur σ {args.blur}, "
        f"noise σ {args.noise}"
    )
    rows = []
    for seed in seeds:
        for name in arms:
            row = run_arm(name, seed, data, args.epochs, args.patience, device)
            rows.append(row)
            print(
                f"{name:<32} seed {seed}: val {row['val_accuracy']:.3f}, test slices "
                f"{row['test_slice_accuracy']:.3f}, particles {row['test_particle_accuracy']:.3f}"
                f", {row['seconds_per_epoch']:.1f} s/epoch × {row['epochs']}",
                flush=True,
            )
    summary = {}
    for name in arms:
        mine = [r for r in rows if r["arm"] == name]
        summary[name] = {
            key: float(np.mean([r[key] for r in mine]))
            for key in ("test_slice_accuracy", "test_particle_accuracy", "seconds_per_epoch")
        } | {"parameters": mine[0]["parameters"]}
    for name, s in summary.items():
        ratio = s["seconds_per_epoch"] / summary[arms[0]]["seconds_per_epoch"]
        print(
            f"{name:<32} mean: slices {s['test_slice_accuracy']:.3f}, particles "
            f"{s['test_particle_accuracy']:.3f}, {s['seconds_per_epoch']:.1f} s/epoch "
            f"({ratio:.1f}× {arms[0]}), {s['parameters']:,} parameters"
        )
    OUT.mkdir(exist_ok=True)
    target = OUT / "flaws.json"
    target.write_text(json.dumps({"args": vars(args), "rows": rows, "summary": summary}, indent=2))
    print(f"saved {target}")


if __name__ == "__main__":
    main()
