"""Benchmark: the whole path on a volume larger than a workstation's comfort — peak RSS and
throughput of ingest (validation, registry, tier-auto labels, COCO export), prediction and
scoring of a SIDE³ uint8 stack (default 1000³ = 954 MiB per stack) written to disk here.

Each step runs as the `tomoloop` command a user types, in a fresh process whose peak RSS
(VmHWM) is read at its end. **Baseline** in the same run: reading the label stack into
memory whole (`tifffile.imread`), what a pipeline without streaming starts with. The
model is a narrow U-Net (base 4, depth 2, 128² tiles) trained for one epoch on a small
separate volume (not measured): the memory is the volume's, not the network's.

Target (issue 8): peak RSS < 2 GB for every step; the script exits 1 when a step misses it.

Run: ``.venv/bin/python bench/big_volume.py [--side 1000]`` (about 25 min at 1000³ on
2 cores; most of it is prediction and scoring, ~1 s per 1000² slice each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from measure import peak_rss_mib

from tomoloop.labels.synthetic import make_electrode

OUT = Path(__file__).resolve().parent / "out" / "big"
PHASES = "pore=0,nmc=1,cbd=2"
_CLI = "from tomoloop.cli import main; sys.argv = ['tomoloop', *sys.argv[1:]]; main()"
_READ = "import tifffile; tifffile.imread(sys.argv[1])"


def write_volume(side: int, folder: Path) -> tuple[Path, Path]:
    """gray.tif and labels.tif (SIDE³ uint8), tiled slice by slice from a 64 × 128 × 128
    synthetic electrode, so this process never holds the volume."""
    small = make_electrode((64, 128, 128), seed=0)
    grey = (small.gray.astype(np.float32) / max(small.gray.max(), 1) * 255).astype(np.uint8)
    reps = -(-side // 128)
    paths = folder / "gray.tif", folder / "labels.tif"
    with tifffile.TiffWriter(paths[0]) as g, tifffile.TiffWriter(paths[1]) as lab:
        for z in range(side):
            g.write(np.tile(grey[z % 64], (reps, reps))[:side, :side], contiguous=True)
            lab.write(np.tile(small.labels[z % 64], (reps, reps))[:side, :side], contiguous=True)
    return paths


def tomoloop(*args: str) -> str:
    """Run a tomoloop command (unmeasured setup); its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "tomoloop.cli", *args], capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"tomoloop {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def trained_model(folder: Path) -> int:
    """A narrow U-Net trained one epoch on a small volume ingested as ``small``."""
    small = make_electrode((32, 128, 128), seed=1)
    tifffile.imwrite(folder / "small-labels.tif", small.labels)
    grey = (small.gray.astype(np.float32) / max(small.gray.max(), 1) * 255).astype(np.uint8)
    tifffile.imwrite(folder / "small-gray.tif", grey)
    tomoloop(
        "ingest", str(folder / "small-gray.tif"), "--labels", str(folder / "small-labels.tif"),
        "--name", "small", "--phases", PHASES,
    )  # fmt: skip
    trained = tomoloop(
        "train", "--dataset", "small", "--arch", "unet", "--epochs", "1", "--patch", "128",
        "--batch", "4", "--patches-per-epoch", "8", "--option", "base=4", "--option", "depth=2",
        "--device", "cpu", "--json",
    )  # fmt: skip
    return json.loads(trained)["model_version"]


def measure(name: str, call: str, *args: str, voxels: int) -> dict:
    started = time.perf_counter()
    rss, _ = peak_rss_mib(call, *args)
    seconds = time.perf_counter() - started
    row = {
        "step": name,
        "peak_rss_mib": rss,
        "seconds": seconds,
        "mvox_per_s": voxels / seconds / 1e6,
    }
    print(f"{name:34s} peak RSS {rss:7.0f} MiB  {seconds:7.1f} s  {row['mvox_per_s']:6.1f} Mvox/s",
          flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1000)
    parser.add_argument("--steps", default="ingest,predict,score", help="which steps to run")
    parser.add_argument("--out", type=Path, default=OUT, help="work folder (emptied first)")
    args = parser.parse_args()
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.environ["TOMOLOOP_HOME"] = str(out / "home")
    os.environ.pop("TOMOLOOP_DATABASE_URL", None)
    gray, labels = write_volume(args.side, out)
    voxels = args.side**3
    tomoloop("db", "upgrade")
    wanted = args.steps.split(",")
    model = str(trained_model(out)) if {"predict", "score"} & set(wanted) else ""
    rows = [measure("baseline: read labels whole", _READ, str(labels), voxels=voxels)]
    if "score" in wanted and "ingest" not in wanted:
        parser.error("score needs the volume registered: add ingest to --steps")
    steps = {
        "ingest (registry + COCO export)": (
            "ingest", str(gray), "--labels", str(labels), "--name", "big", "--phases", PHASES,
        ),
        "predict (labels + entropy TIFFs)": (
            "predict", str(gray), "--model", model, "--out", str(out / "pred.tif"),
            "--uncertainty", str(out / "entropy.tif"), "--device", "cpu", "--json",
        ),
        "score (entropy, every z slice)": (
            "score", "--model", model, "--volume", "big", "--device", "cpu", "--json",
        ),
    }  # fmt: skip
    rows += [
        measure(name, _CLI, *argv, voxels=voxels)
        for name, argv in steps.items()
        if name.split()[0] in wanted
    ]
    baseline = rows[0]["peak_rss_mib"]
    for row in rows:
        row["vs_baseline"] = row["peak_rss_mib"] / baseline
    worst = max(r["peak_rss_mib"] for r in rows[1:])
    print(f"{args.side}³ uint8: worst step {worst:.0f} MiB ({worst / baseline:.2f}x reading the "
          f"labels whole); target < 2048 MiB: {'met' if worst < 2048 else 'NOT met'}")  # fmt: skip
    (out / "big_volume.json").write_text(json.dumps({"side": args.side, "steps": rows}, indent=2))
    if worst >= 2048:
        sys.exit(1)


if __name__ == "__main__":
    main()
