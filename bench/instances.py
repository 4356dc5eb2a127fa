"""Benchmark: Mask R-CNN particles on a porespy sphere packing with exact instances.

Packings of non-overlapping spheres (porespy ``random_spheres``; every sphere one particle, so
instances are exact) are forward-modelled to CT-like grey (particles bright, blur, noise). Mask
R-CNN trains on the z slices of one packing and is scored (COCO AP, 0–1) on the z slices of another,
held out (its own seed). The baseline, run on the same slices in the same run, is the classical
pipeline Daemi et al. 2022 (§2.2; docs/references.md) compare against: Otsu threshold and 2D
connected components, each with score 1.

Speed on this machine's CPU: prediction slices/s (batch 4) against the baseline's, and
particles/s of the whole 3D path (z, y, x prediction → fusion → watershed → table), with
the share of true particles it recovers (3D IoU ≥ 0.5).

Run: ``.venv/bin/python bench/instances.py [--iterations 300] [--side 96]``; writes
``bench/out/instances.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cc3d
import cv2
import numpy as np
import porespy as ps
import torch
from scipy import ndimage

from tomoloop.adapters import detectron2
from tomoloop.metrics.coco import instance_scores
from tomoloop.particles.instances import Detections, coco_from_slices, detection_results
from tomoloop.particles.reassembly import analyse, reassemble

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def packing(side: int, depth: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(grey uint8, particle labels uint32) of a sphere packing, (depth, side, side)."""
    spheres = ps.generators.random_spheres(
        shape=[depth, side, side], r=7, clearance=1, phi=0.25, seed=seed, edges="extended"
    ).astype(bool)
    labels = cc3d.connected_components(spheres, connectivity=6).astype(np.uint32)
    rng = np.random.default_rng(seed)
    grey = ndimage.gaussian_filter(np.where(spheres, 170.0, 70.0), 1.0)
    grey = np.clip(grey + rng.normal(0, 14, grey.shape), 0, 255).astype(np.uint8)
    return grey, labels


def per_slice_instances(labels: np.ndarray) -> list[np.ndarray]:
    """2D instance slices as class maps (1 particle) for the COCO conversion."""
    return [(s > 0).astype(np.uint8) for s in labels]


def baseline(image: np.ndarray) -> Detections:
    """Otsu threshold + 2D connected components, score 1 each."""
    _, binary = cv2.threshold(image, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    n, comp = cv2.connectedComponents(binary, connectivity=8)
    masks = (
        np.stack([comp == i for i in range(1, n)]) if n > 1 else np.zeros((0, *image.shape), bool)
    )
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return Detections(
        masks,
        np.ones(len(masks)),
        np.zeros(len(masks), np.int64),
        np.array(boxes, np.float32).reshape(-1, 4),
    )


def recovered(truth: np.ndarray, found: np.ndarray) -> float:
    """Share of true particles with a found particle of 3D IoU ≥ 0.5."""
    hits = 0
    ids = [i for i in np.unique(truth) if i]
    for i in ids:
        own = truth == i
        candidates, counts = np.unique(found[own], return_counts=True)
        best = 0.0
        for c, inter in zip(candidates, counts, strict=True):
            if c:
                best = max(best, inter / np.logical_or(own, found == c).sum())
        hits += best >= 0.5
    return hits / max(len(ids), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    grey_train, labels_train = packing(args.side, args.depth, args.seed)
    grey, labels = packing(args.side, args.depth, args.seed + 1)  # held out
    config = detectron2.MaskRCNNConfig(
        depth=18,
        norm="FrozenBN",
        iterations=args.iterations,
        lr=1e-3,
        batch=2,
        min_size=args.side,
        max_size=args.side,
        checkpoint_every=10**9,
        score_threshold=0.3,
    )
    names = [f"z{z:05d}.png" for z in range(args.depth)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        for z in range(args.depth):
            cv2.imwrite(str(folder / "images" / names[z]), grey_train[z])
        document = coco_from_slices(
            per_slice_instances(labels_train), names, ["pore", "particle"], [1]
        )
        (folder / "train.json").write_text(json.dumps(document))
        started = time.perf_counter()
        outcome = detectron2.train(
            folder / "train.json",
            folder / "images",
            config,
            folder / "run",
            torch.device("cpu"),
            on_iteration=lambda i, loss: (
                print(f"iteration {i}: loss {loss:.3f}", flush=True) if i % 25 == 0 else None
            ),
        )
        train_s = time.perf_counter() - started
    net = detectron2.load(outcome.checkpoint, torch.device("cpu"))
    test_doc = coco_from_slices(per_slice_instances(labels), names, ["pore", "particle"], [1])
    images = list(grey)

    started = time.perf_counter()
    found = [
        d for k in range(0, len(images), 4) for d in detectron2.predict(net, images[k : k + 4])
    ]
    predict_s = time.perf_counter() - started
    started = time.perf_counter()
    classic = [baseline(i) for i in images]
    baseline_s = time.perf_counter() - started
    ap = instance_scores(
        test_doc, [r for k, d in enumerate(found) for r in detection_results(d, k + 1)]
    )
    ap_base = instance_scores(
        test_doc, [r for k, d in enumerate(classic) for r in detection_results(d, k + 1)]
    )

    print("predicting the held-out volume along z, y and x", flush=True)
    started = time.perf_counter()
    masks = detectron2.axis_masks(net, grey)
    particles = reassemble(masks)
    analysis = analyse(particles, (1.0, 1.0, 1.0))
    volume_s = time.perf_counter() - started
    result = {
        "volume": [args.depth, args.side, args.side],
        "true_particles": int(labels.max()),
        "train": {
            "iterations": args.iterations,
            "seconds": train_s,
            "slices": args.depth,
            "loss_first_10": float(np.mean(outcome.losses[:10])),
            "loss_last_10": float(np.mean(outcome.losses[-10:])),
        },
        "test_slices": len(images),
        "maskrcnn_ap": ap,
        "baseline_ap": ap_base,
        "segm_ap_ratio": ap["segm_AP"] / ap_base["segm_AP"] if ap_base["segm_AP"] else None,
        "predict_slices_per_s": len(images) / predict_s,
        "baseline_slices_per_s": len(images) / baseline_s,
        "volume_path_seconds": volume_s,
        "particles_found": len(analysis.particles),
        "particles_per_s": len(analysis.particles) / volume_s,
        "recovered_share": recovered(labels, particles),
        "threads": torch.get_num_threads(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "instances.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
