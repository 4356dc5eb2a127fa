"""Benchmark: ``tomoloop microstructure``'s tortuosity, today's default run vs the one before.

Input: a SIDE³ crop of the MATBOX NMC labels (pore 0, NMC 1, binder 2). In this process:

- baseline: what the command did before — ``taufactor.Solver`` as shipped (a new volume per
  sweep) with torch's default threads, for every phase along every axis;
- tomoloop: :func:`tomoloop.metrics.structure.microstructure` with the command's defaults
  (the pore along x, as the promotion gate) — and, to separate the two effects, the same
  all-phases × all-axes run.

Solving every phase along every axis with the baseline takes close to an hour at 256³ on
2 cores, so by default only the pore along x is solved by both: its ratio is a lower bound
for the default run's (the baseline ran eight more solves). With ``--all`` tomoloop also
solves all nine, and the baseline's nine are extrapolated from its time per sweep on the
pore along x times each solve's sweep count (the buffered solver takes the same steps).
Every τ the baseline solves is checked against tomoloop's (1 %); exit 1 if one differs.

Run: ``.venv/bin/python bench/microstructure.py [--side 128] [--all]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import taufactor
import tifffile

from tomoloop.metrics.sor import BufferedSolver
from tomoloop.metrics.structure import AXES, microstructure

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
NAMES = ("pore", "nmc", "cbd")


def crop(side: int, data: Path) -> np.ndarray:
    labels = tifffile.imread(data / "matbox_nmc_cbd_labels.tif")
    if min(labels.shape) < side:
        labels = np.concatenate([labels, labels[::-1]])
    return np.ascontiguousarray(labels[:side, :side, :side])


def cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def solve(cls: type, mask: np.ndarray, axis: str) -> tuple[float, int, float]:
    """(τ, iterations, seconds) of one solve the way ``tomoloop.metrics.tortuosity`` runs it."""
    img = np.ascontiguousarray(np.moveaxis(mask, AXES.index(axis), 0)).astype(np.uint8)
    t0 = time.perf_counter()
    solver = cls(img, device="cpu")
    tau = solver.solve(verbose=False, conv_crit=1e-2, iter_limit=20_000)
    return float(np.asarray(tau).ravel()[0]), solver.iter, time.perf_counter() - t0


def iterations(labels: np.ndarray) -> dict[tuple[str, str], int]:
    """Sweeps each phase × axis solve takes (the buffered solver takes the same steps)."""
    out = {}
    for k, name in enumerate(NAMES):
        for axis in AXES:
            mask = labels == k
            img = np.ascontiguousarray(np.moveaxis(mask, AXES.index(axis), 0)).astype(np.uint8)
            solver = BufferedSolver(img, device="cpu")
            solver.solve(verbose=False, conv_crit=1e-2, iter_limit=20_000)
            out[name, axis] = solver.iter
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--all", action="store_true", help="also all phases × axes")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    labels = crop(args.side, args.data)
    print(f"{args.side}³ NMC labels, fractions {np.bincount(labels.ravel()) / labels.size}")

    u0, s0 = cpu_seconds()
    t0 = time.perf_counter()
    default = microstructure(labels, NAMES, None, axes="x", transport=["pore"])
    default_s = time.perf_counter() - t0
    u1, s1 = cpu_seconds()
    tau_x = default["phases"]["pore"]["tortuosity"]["x"]
    print(f"tomoloop default (pore, x): τ {tau_x:.4f} {default_s:7.1f} s", end=" ")
    print(f"user {u1 - u0:.1f} s sys {s1 - s0:.1f} s")

    u0, s0 = cpu_seconds()
    tau, steps, seconds = solve(taufactor.Solver, labels == 0, "x")
    u1, s1 = cpu_seconds()
    agree = abs(tau_x - tau) <= 0.01 * tau
    print(
        f"baseline taufactor pore x:   τ {tau:.4f} {seconds:7.1f} s user {u1 - u0:.1f} s "
        f"sys {s1 - s0:.1f} s, {steps} sweeps → default ≥ {seconds / default_s:.1f}x",
        flush=True,
    )
    result = {
        "side": args.side,
        "tomoloop_default_s": default_s,
        "baseline_pore_x_s": seconds,
        "baseline_pore_x_user_sys_s": [u1 - u0, s1 - s0],
        "ratio_default_at_least": seconds / default_s,
        "tau": [tau_x, tau],
    }
    if args.all:
        t0 = time.perf_counter()
        microstructure(labels, NAMES, None, axes=AXES)
        all_s = time.perf_counter() - t0
        counts = iterations(labels)
        baseline_s = seconds / steps * sum(counts.values())
        result.update(tomoloop_all_s=all_s, baseline_all_s_extrapolated=baseline_s)
        print(
            f"all nine: tomoloop {all_s:.1f} s, baseline ≈ {baseline_s:.0f} s "
            f"({sum(counts.values())} sweeps) → default {baseline_s / default_s:.1f}x, "
            f"same nine {baseline_s / all_s:.1f}x"
        )
    print(f"τ {'agree' if agree else 'DIFFER'} (1 %)")
    (OUT / "microstructure.json").write_text(json.dumps(result, indent=2))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
