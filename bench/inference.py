"""Benchmark: volume prediction throughput per architecture, and peak memory at 256³.

For each registered architecture (3 classes, default widths, random weights — speed does
not depend on training) the same z slices of a 256³ forward-modelled NMC electrode are
predicted two ways in this process:

- naive: the loop a user writes first — every 128×128 patch of every slice through the
  network one at a time (no overlap, so seams), probabilities kept for the whole volume;
- tomoloop: :func:`tomoloop.inference.predict_volume` — overlapping tiles blended (no
  seams), batched, labels and float16 entropy streamed to TIFF:

- tomoloop at the default tile, the 128 training patch (overlap 32: 9 tiles instead of 4
  per 256² slice — the price of no seams), and with ``--tile 256`` (whole 256² slices in
  one pass each).

Both tomoloop runs also compute and write per-voxel entropy. Peak RSS is measured in
fresh processes over the whole 256³ volume: naive in-memory vs tomoloop streaming along z
and fused over z, y, x.

Run: ``.venv/bin/python bench/inference.py [--slices 16] [--archs unet,ynet]``.
Input: ``../shared/data/matbox_nmc_cbd_labels.tif`` (forward-modelled to grayscale).
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
from measure import peak_rss_mib

from tomoloop.inference.predict import normalise, predict_volume
from tomoloop.labels.synthetic import forward_model
from tomoloop.networks.registry import MODELS, build_model
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.window import percentile_window

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
SIDE = 256
TILE = 128
WHOLE_SLICE = 256


def gray_volume() -> Path:
    """A SIDE³ uint16 CT-like stack from the MATBOX NMC labels (mirrored to fill z)."""
    path = OUT / f"nmc-gray-{SIDE}.tif"
    if not path.exists():
        labels = tifffile.imread(DATA / "matbox_nmc_cbd_labels.tif")[:, :SIDE, :SIDE]
        labels = np.concatenate([labels, labels[::-1]])[:SIDE]
        tifffile.imwrite(path, forward_model(labels), photometric="minisblack")
    return path


@torch.inference_mode()
def naive_predict(model: torch.nn.Module, path: Path, slices: int | None = None) -> np.ndarray:
    """Patch by patch, one at a time, no overlap; (C, Z, Y, X) probabilities in memory."""
    model.eval()
    with open_stack(path) as stack:
        window = percentile_window(stack)
        n = stack.shape[0] if slices is None else slices
        probs = None
        for z in range(n):
            image = normalise(stack.slice("z", z), window)
            for y in range(0, image.shape[0], TILE):
                for x in range(0, image.shape[1], TILE):
                    tile = torch.from_numpy(np.ascontiguousarray(image[y : y + TILE, x : x + TILE]))
                    p = model(tile[None, None]).softmax(dim=1)[0].numpy()
                    if probs is None:
                        probs = np.zeros((p.shape[0], n, *image.shape), dtype=np.float32)
                    probs[:, z, y : y + TILE, x : x + TILE] = p
    labels = probs.argmax(axis=0).astype(np.uint8)
    tifffile.imwrite(OUT / "naive-labels.tif", labels)
    return labels


class FirstSlices:
    """A stack view of the first ``n`` z slices (for timing a subset with the real code)."""

    def __init__(self, stack, n: int) -> None:
        self._stack, self.shape, self.dtype = stack, (n, *stack.shape[1:]), stack.dtype

    def iter_slices(self, axis="z", indices=None):
        return self._stack.iter_slices(axis, range(self.shape[0]) if indices is None else indices)


def tomoloop_seconds(model: torch.nn.Module, path: Path, slices: int, tile: int) -> float:
    with open_stack(path) as stack:
        window = percentile_window(stack)
        t0 = time.perf_counter()
        predict_volume(
            model,
            FirstSlices(stack, slices),
            OUT / "labels.tif",
            OUT / "unsure.tif",
            tile=tile,
            overlap=32,
            window=window,
        )
        return time.perf_counter() - t0


def naive_seconds(model: torch.nn.Module, path: Path, slices: int) -> float:
    t0 = time.perf_counter()
    naive_predict(model, path, slices)
    return time.perf_counter() - t0


def bench_speed(archs: list[str], slices: int, repeats: int) -> list[dict]:
    """Per arch, ``repeats`` rounds of naive → whole-slice tile → default tile, interleaved so
    that load on a shared machine hits all three alike; the median of each is reported.
    """
    path = gray_volume()
    rows = []
    for arch in archs:
        torch.manual_seed(0)
        model = build_model(arch, 1, 3).eval()
        whole = WHOLE_SLICE
        naive_predict(model, path, 1)  # warm-up
        runs = [
            (
                naive_seconds(model, path, slices),
                tomoloop_seconds(model, path, slices, whole),
                tomoloop_seconds(model, path, slices, TILE),
            )
            for _ in range(repeats)
        ]
        naive_s, ours_s, tiled_s = (float(np.median(column)) for column in zip(*runs, strict=True))
        voxels = slices * SIDE * SIDE
        rows.append(
            {
                "arch": arch,
                "parameters": sum(p.numel() for p in model.parameters()),
                "whole_slice_tile": whole,
                "naive_voxels_per_s": voxels / naive_s,
                "tomoloop_voxels_per_s": voxels / ours_s,
                "tomoloop_128_voxels_per_s": voxels / tiled_s,
                "ratio": naive_s / ours_s,
                "ratio_128": naive_s / tiled_s,
                "ratios_128_per_repeat": [n / t for n, _, t in runs],
                "naive_ms_per_patch": 1000 * naive_s / (slices * 4),
            }
        )
        print(
            f"{arch:12s} naive {voxels / naive_s:9.0f} vox/s | tomoloop --tile {whole}: "
            f"{voxels / ours_s:9.0f} vox/s ({naive_s / ours_s:4.2f}x) | tile 128: "
            f"{voxels / tiled_s:9.0f} vox/s ({naive_s / tiled_s:4.2f}x)",
            flush=True,
        )
    return rows


_TOMOLOOP = (
    "import torch; from tomoloop.networks import build_model; "
    "from tomoloop.inference import predict_volume; from tomoloop.stacks import open_stack; "
    "torch.manual_seed(0); m = build_model('unet', 1, 3, base=4).eval(); "
    "s = open_stack(sys.argv[1]); "
    "predict_volume(m, s, sys.argv[2], sys.argv[3], axes=tuple(sys.argv[4]), tile=128)"
)
_NAIVE = (
    "import torch; from tomoloop.networks import build_model; from inference import naive_predict; "
    "torch.manual_seed(0); m = build_model('unet', 1, 3, base=4).eval(); "
    "naive_predict(m, __import__('pathlib').Path(sys.argv[1]))"
)


def bench_memory() -> list[dict]:
    """Peak RSS over the whole SIDE³ volume (a narrow U-Net: memory is the volume's)."""
    path = str(gray_volume())
    rows = []
    for case, call, args in (
        ("naive, in memory", _NAIVE, ()),
        ("tomoloop --axes z", _TOMOLOOP, (str(OUT / "m.tif"), str(OUT / "mu.tif"), "z")),
        ("tomoloop --axes zyx", _TOMOLOOP, (str(OUT / "m.tif"), str(OUT / "mu.tif"), "zyx")),
    ):
        t0 = time.perf_counter()
        rss, _ = peak_rss_mib(call, path, *args)
        rows.append({"case": case, "peak_rss_mib": rss, "seconds": time.perf_counter() - t0})
        print(f"{SIDE}³ {case:22s} peak RSS {rss:7.0f} MiB  {rows[-1]['seconds']:6.1f} s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=16, help="z slices timed per arch")
    parser.add_argument("--archs", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per arch")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {sys.platform}")
    results = {"speed": bench_speed(args.archs.split(","), args.slices, args.repeats)}
    if not args.skip_memory:
        results["memory"] = bench_memory()
    (OUT / "inference.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
