"""Benchmark: each seed paper's published recipe against tomoloop's default, through the CLI.

For each architecture, ``tomoloop train --recipe seed`` and ``--recipe default`` run as the
user runs them (a process each, SQLite registry in a temporary home) on the same dataset and
budget: the MATBOX NMC cathode labels of ``../shared/data`` (a 128² crop of all 251 slices)
forward-modelled to CT-like grey as in ``bench/seg_quality.py`` (the binder faint, near the
pore), ingested with a 60 / 15 / 25 split. The test split is scored in each paper's own terms
(``train --json``: pooled and per-patch mIoU / mDSC for Quenum et al. 2023, Table 1; F1 per
class, best-5 / lowest-5 slice accuracy, mIU and fIU for Tabassum et al. n.d., App. Table
II), and the paper's own figures (other data, same protocol) are printed beside them.

Run: ``.venv/bin/python bench/seed_recipes.py [--runs matphase:default,matphase:seed,…]
[--epochs 8] [--patches-per-epoch 128] [--patch 64]``; a run is ``ARCH:RECIPE`` with
``:KEY=VALUE`` network options after it (``matphase:default:lcgar_padding=zero``). Output:
``bench/out/seed_recipes.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from tomoloop.labels.synthetic import forward_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
SIDE = 128
PHASES = "pore=0,nmc=1,cbd=2"
EXTRA = {"matphase": ("--exclusive", "cbd:nmc")}
"""What a recipe leaves to the data: MatPhase's exclusive phase pair (docs/seeds.md)."""
PAPER = {
    # Tabassum et al. n.d., App. Table II, the MatPhase row (F1 pore / C / Ni; ACC % best 5,
    # lowest 5; mIU; fIU) — FIB-SEM of a cathode, not this data
    "matphase": "F1 0.86 / 0.85 / 0.95, best 5 93.2 ± 0.02 %, lowest 5 91.9 ± 1.3 %, "
    "mIU 0.80, fIU 0.87 (Tabassum et al. n.d., App. Table II)",
    # Quenum et al. 2023, Table 1 (Li–Li symmetric cell XCT, dendrites)
    "unet": "mIoU 0.8698, mDSC 0.8998 (Quenum et al. 2023, Table 1)",
    "ynet": "mIoU 0.8481, mDSC 0.8790 (Quenum et al. 2023, Table 1)",
    "transforcnn": "mIoU 0.9511, mDSC 0.9647 (Quenum et al. 2023, Table 1)",
    "enet": "mIoU 0.9514, mDSC 0.9641 (Quenum et al. 2023, Table 1)",
    "lrcsnet": "no figure in the text of Su et al. 2022 held in ../shared/seeds",
}


def write_scan(folder: Path) -> tuple[Path, Path]:
    """The forward-modelled grey stack (uint16) and its labels, (251, 128, 128) each."""
    labels = tifffile.imread(DATA / "matbox_nmc_cbd_labels.tif")[:, :SIDE, :SIDE]
    gray = forward_model(labels)  # uint16 already
    paths = folder / "gray.tif", folder / "labels.tif"
    tifffile.imwrite(paths[0], gray)
    tifffile.imwrite(paths[1], labels.astype(np.uint8))
    return paths


def tomoloop(env: dict, *args: str) -> dict:
    """One ``tomoloop … --json`` command as a process; its JSON document."""
    command = [sys.executable, "-m", "tomoloop.cli", *args, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout)


RUNS = ",".join(f"{a}:{r}" for a in ("matphase", "unet", "transforcnn", "lrcsnet")
                for r in ("default", "seed"))  # fmt: skip


def row(run: str, result: dict, seconds: float) -> dict:
    """The figures both papers report, from ``train --json``."""
    f1 = {name: c["dice"] for name, c in result["per_class"].items()}
    keys = ("mIoU", "mDSC", "mIoU_per_patch", "mIoU_per_patch_std", "mDSC_per_patch", "fIU")
    extremes = ("best5_accuracy", "best5_accuracy_std", "lowest5_accuracy", "lowest5_accuracy_std")
    return {
        "run": run,
        "model_version": result["model_version"],
        **{k: result[k] for k in (*keys, *extremes)},
        "F1": f1,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=RUNS, help="ARCH:RECIPE[:KEY=VALUE…], comma-separated")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patches-per-epoch", type=int, default=128)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT / "seed_recipes.json")
    args = parser.parse_args()
    budget = ("--epochs", str(args.epochs), "--patches-per-epoch", str(args.patches_per_epoch),
              "--patch", str(args.patch), "--seed", str(args.seed), "--device", "cpu")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = os.environ | {
            "TOMOLOOP_HOME": str(folder / "home"),
            "TOMOLOOP_DATABASE_URL": f"sqlite:///{folder / 'registry.sqlite'}",
        }
        gray, labels = write_scan(folder)
        tomoloop(env, "db", "upgrade")
        tomoloop(env, "ingest", str(gray), "--labels", str(labels), "--name", "nmc",
                 "--phases", PHASES, "--split", "0.6,0.15,0.25")  # fmt: skip
        for run in args.runs.split(","):
            arch, recipe, *options = run.split(":")
            extra = [*EXTRA.get(arch, ())] if recipe == "seed" else []
            extra += [a for option in options for a in ("--option", option)]
            start = time.perf_counter()
            result = tomoloop(env, "train", "--dataset", "nmc", "--arch", arch,
                              "--recipe", recipe, *budget, *extra)  # fmt: skip
            rows.append(row(run, result, time.perf_counter() - start))
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"budget": budget, "rows": rows, "paper": PAPER}
    args.out.write_text(json.dumps(document, indent=2))
    print("\n| run | mIoU | mDSC | mIoU per patch | fIU | F1 pore / nmc / cbd "
          "| best 5 acc | lowest 5 acc | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f1 = " / ".join(f"{v:.3f}" for v in r["F1"].values())
        print(f"| {r['run']} | {r['mIoU']:.4f} | {r['mDSC']:.4f} "
              f"| {r['mIoU_per_patch']:.4f} ± {r['mIoU_per_patch_std']:.4f} | {r['fIU']:.4f} "
              f"| {f1} | {100 * r['best5_accuracy']:.1f} ± {100 * r['best5_accuracy_std']:.1f} % "
              f"| {100 * r['lowest5_accuracy']:.1f} ± {100 * r['lowest5_accuracy_std']:.1f} % "
              f"| {r['seconds']:.0f} |")  # fmt: skip
    for arch in dict.fromkeys(run.split(":")[0] for run in args.runs.split(",")):
        print(f"paper, {arch}: {PAPER.get(arch, '—')}")


if __name__ == "__main__":
    main()
