"""Benchmark: uncertainty scoring of the demo's active-learning round, today's code path vs the
one-pass-at-a-time loop it replaced.

The demo's BALD round scores 29 slices of 128² with the demo U-Net (default widths, trained
on 64² patches, so tiles of 64 with 16 px overlap: 9 tiles a slice) and 8 MC-dropout passes.
The same slices are scored here, in this process, by

- baseline: the scoring loop as it was before passes were batched (kept below as a copy: one
  ``predict_slice`` call per MC-dropout pass or flip, 8 tiles a batch, contiguous layout);
- tomoloop: :func:`tomoloop.active.scoring.slice_features`.

Both start from the same seed; the script checks every slice's score agrees (relative 1e-4)
and exits 1 otherwise. Random weights: speed does not depend on training.

Run: ``.venv/bin/python bench/scoring.py [--slices 29] [--methods bald,entropy,tta]
[--repeats 2]``. Input: ``bench/out/nmc-gray-256.tif`` (made by ``bench/inference.py``; a
random volume when it is missing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import nn

from tomoloop.active.scoring import ScoreOptions, features_of, slice_features
from tomoloop.inference.predict import blend_window, tile_origins, tile_side
from tomoloop.inference.uncertainty import (
    FLIPS,
    enable_dropout,
    entropy,
    mutual_information,
    tta_variance,
)
from tomoloop.networks.registry import build_model

OUT = Path(__file__).resolve().parent / "out"
SIDE = 128
TILE = 64


@torch.inference_mode()
def baseline_predict_slice(model, image, tile, overlap, batch=8, dropout=False):
    """``predict_slice`` as it was before this benchmark's change (the baseline)."""
    h, w = image.shape
    th, tw = tile_side(h, tile), tile_side(w, tile)
    ph, pw = max(h, th), max(w, tw)
    padded = np.pad(image.astype(np.float32), ((0, ph - h), (0, pw - w)), mode="reflect")
    weights = blend_window(th, tw)
    origins = [
        (y, x)
        for y in tile_origins(ph, th, min(overlap, th - 1))
        for x in tile_origins(pw, tw, min(overlap, tw - 1))
    ]
    total, norm = None, np.zeros((ph, pw), dtype=np.float32)
    model.eval()
    if dropout:
        enable_dropout(model)
    try:
        for start in range(0, len(origins), batch):
            chunk = origins[start : start + batch]
            tiles = np.stack([padded[y : y + th, x : x + tw] for y, x in chunk])[:, None]
            probs = model(torch.from_numpy(tiles)).float().softmax(dim=1).numpy()
            if total is None:
                total = np.zeros((probs.shape[1], ph, pw), dtype=np.float32)
            for (y, x), p in zip(chunk, probs, strict=True):
                total[:, y : y + th, x : x + tw] += p * weights
                norm[y : y + th, x : x + tw] += weights
    finally:
        model.eval()
    return (total / norm)[:, :h, :w]


def baseline_features(model: nn.Module, image: np.ndarray, o: ScoreOptions):
    """The slice features as the scoring loop computed them before (the baseline)."""
    if o.method == "entropy":
        probs = baseline_predict_slice(model, image, o.tile, o.overlap)
        return features_of(entropy(probs), probs, o)
    if o.method == "bald":
        samples = np.stack(
            [
                baseline_predict_slice(model, image, o.tile, o.overlap, dropout=True)
                for _ in range(o.passes)
            ]
        )
        return features_of(mutual_information(samples), samples.mean(axis=0), o)
    flips = []
    for dims in FLIPS:
        flipped = np.ascontiguousarray(np.flip(image, dims)) if dims else image
        probs = baseline_predict_slice(model, flipped, o.tile, o.overlap)
        flips.append(np.flip(probs, dims) if dims else probs)
    samples = np.stack(flips)
    return features_of(tta_variance(samples), samples.mean(axis=0), o)


def demo_slices(n: int) -> np.ndarray:
    """(n, 128, 128) float32 normalised slices (the forward-modelled NMC volume if present)."""
    path = OUT / "nmc-gray-256.tif"
    if path.exists():
        volume = tifffile.imread(path)[:n, :SIDE, :SIDE].astype(np.float32)
        lo, hi = np.percentile(volume, (0.5, 99.5))
        return np.clip((volume - lo) / (hi - lo), 0, 1)
    return np.random.default_rng(0).random((n, SIDE, SIDE), dtype=np.float32)


def timed(score, model, images, options) -> tuple[float, list[float]]:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    scores = [score(model, image, options).score for image in images]
    return time.perf_counter() - t0, scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=29)
    parser.add_argument("--methods", default="bald,entropy,tta")
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds, median")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    model = build_model("unet", 1, 3).eval()
    images = demo_slices(args.slices)
    rows, agree = [], True
    for method in args.methods.split(","):
        options = ScoreOptions(method, passes=args.passes, tile=TILE, overlap=TILE // 4)
        runs = []
        for _ in range(args.repeats):
            base_s, base_scores = timed(baseline_features, model, images, options)
            ours_s, ours_scores = timed(slice_features, model, images, options)
            runs.append((base_s, ours_s))
            same = np.allclose(ours_scores, base_scores, rtol=1e-4, atol=1e-7)
            agree &= bool(same)
        base_s, ours_s = (float(np.median(c)) for c in zip(*runs, strict=True))
        n = len(images)
        rows.append(
            {
                "method": method,
                "slices": n,
                "baseline_slices_per_s": n / base_s,
                "tomoloop_slices_per_s": n / ours_s,
                "ratio": base_s / ours_s,
                "ratios_per_repeat": [b / o for b, o in runs],
                "scores_agree": bool(same),
            }
        )
        print(
            f"{method:8s} {n} slices: baseline {base_s:6.1f} s ({n / base_s:5.2f} slices/s) | "
            f"tomoloop {ours_s:6.1f} s ({n / ours_s:5.2f} slices/s) | {base_s / ours_s:4.1f}x"
            f" | per repeat {', '.join(f'{b / o:.1f}x' for b, o in runs)}"
            f" | scores {'agree' if same else 'DIFFER'}",
            flush=True,
        )
    (OUT / "scoring.json").write_text(json.dumps(rows, indent=2))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
