"""Benchmark: label efficiency of the query arms when a model meets a new scan (issue 18).

Source → target scenarios from ../shared/data (``bench/shift_scenarios.py``: ``nmc``,
``cupping``, ``segment``, ``rescaled``, ``wetted``, ``ellipsoids``, ``weave``,
``weave_rescaled``), each a model trained on one scan meeting another part of the material
imaged differently.

The direct oracle answers from the labels. Reports per arm the labelled target pixels to
reach 95 % of the gain (``full − initial``) and the ratios the issue's target names: the
best tomoloop arm against the best random control, and the best region arm against the
best slice arm. Also every arm's AUC over the labelled range all arms share, against the
control with the highest AUC seed by seed (mean difference ± standard error, seeds ahead).

Run: ``.venv/bin/python bench/al_efficiency.py --scenario nmc [--seeds 3] [--rounds 5]``
(``--quick`` for a CI-sized run); writes ``bench/out/al_shift_<scenario>.json`` and ``.png``.
``--reread DOCUMENT`` prints a saved run's report as this checkout reads it, without training.
The same benchmark on any stacks: ``tomoloop benchmark al --source G:L --target G:L ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
import torch
from shift_scenarios import DATA, ROOT, SCENARIOS, SHIFTED

from tomoloop import lifeline
from tomoloop.active.domain_shift import domain_shift, summarise
from tomoloop.active.label_efficiency import Split
from tomoloop.active.shift_setup import (
    DEFAULT_ARMS,
    ShiftSetup,
    parse_arms,
    quick,
    read_shift_data,
)
from tomoloop.report.plots import plot_domain_shift

OUT = ROOT / "bench" / "out"
CONTROLS = ("random/slice", "random/region", "foreground_random/region")


def write_scenario(
    name: str, data: Path, folder: Path | None = None
) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """The scenario's source and target (gray, labels) TIFFs under ``folder`` (default
    bench/out/<name>/), each written beside and renamed into place: runs of one scenario
    side by side never read a half-written file."""
    folder = folder or OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for role, (gray, labels) in zip(("source", "target"), SCENARIOS[name][0](data), strict=True):
        paths = folder / f"{role}_gray.tif", folder / f"{role}_labels.tif"
        for path, stack in zip(paths, (gray, labels), strict=True):
            part = path.with_suffix(f".{os.getpid()}.part")
            tifffile.imwrite(part, stack)
            part.replace(path)
        pairs.append(paths)
    return pairs[0], pairs[1]


def shifted_slices(split: Split, segment: slice) -> dict[str, list[int]]:
    """Per part of the target's split, ``[slices inside segment, slices]``: a part with none
    inside cannot see the shift (a test split with none measures the rest of the scan)."""
    parts = {"pool": split.pool_z, "val": split.val_z, "test": split.test_z}
    return {
        name: [sum(segment.start <= z < segment.stop for z in zs), len(zs)]
        for name, zs in parts.items()
    }


CROSSINGS = (
    ("pixels_to_95", ""),
    ("pixels_to_95_held", "_held"),
    ("pixels_to_95_interpolated", "_interpolated"),
)
"""Each arm's crossing of the 95 % level and the suffix of the ratios read from it."""


def ratios(document: dict) -> dict:
    """The issue's two ratios of pixels to 95 % of the gain (None where a side never
    reaches it): best tomoloop arm / best random control, best region arm / best slice arm;
    the same two of the pixels from which the mean curve holds the level to its end
    (``…_held``), which a crossing followed by a fall back does not count; and of the
    crossings read between the rounds (``…_interpolated``), which a grid of rounds that
    double can only place to within one round.
    """
    out = {}
    for key, suffix in CROSSINGS:
        reached = {n: r[key] for n, r in document["strategies"].items()}
        ours = _fewest(reached, [n for n in reached if n not in CONTROLS])
        control = _fewest(reached, [n for n in reached if n in CONTROLS])
        region = _fewest(reached, [n for n in reached if n.endswith("/region")])
        slices = _fewest(reached, [n for n in reached if n.endswith("/slice")])
        out[f"best_arm_vs_best_control{suffix}"] = ours / control if ours and control else None
        out[f"best_region_vs_best_slice{suffix}"] = region / slices if region and slices else None
    return out


def _fewest(reached: dict[str, float | None], names: list[str]) -> float | None:
    """The fewest pixels any of ``names`` needed (None where none of them got there)."""
    found = [n for name in names if (n := reached[name]) is not None]
    return min(found) if found else None


def against_best_control(document: dict) -> dict:
    """Every other arm's AUC against the control with the highest AUC, seed by seed (the
    seeds share their initial models, so a seed's difference leaves its own luck out):
    ``{arm: {"control", "difference", "standard_error", "seeds_ahead", "seeds"}}``, the
    difference the mean over seeds, its standard error None for one seed.
    """
    arms = document["strategies"]
    controls = [n for n in arms if n in CONTROLS]
    if not controls:
        return {}
    control = max(controls, key=lambda n: arms[n]["auc"])
    out = {}
    for name, result in arms.items():
        if name == control:
            continue
        differences = np.subtract(result["auc_seeds"], arms[control]["auc_seeds"])
        n = len(differences)
        out[name] = {
            "control": control,
            "difference": float(differences.mean()),
            "standard_error": float(differences.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
            "seeds_ahead": int((differences > 0).sum()),
            "seeds": n,
        }
    return out


def show(document: dict) -> None:
    """The run's report on stdout: the references, each arm's crossings, AUC and time, the
    AUC against the best control and the issue's ratios."""
    seeds = len(document["initial_seeds"])
    print(
        f"\nsources only {document['sources_only_miou']:.4f} (seeds "
        + ", ".join(f"{m:.4f}" for m in document["sources_only_seeds"])
        + f"), start (target val selection) {document['initial_miou']:.4f} (seeds "
        + ", ".join(f"{m:.4f}" for m in document["initial_seeds"])
        + f"), full data {document['full_data_miou']:.4f} (seeds "
        + ", ".join(f"{m:.4f}" for m in document["full_data_seeds"])
        + f"), gain {document['gain']:+.4f} → "
        + ("valid" if document["valid"] else "NOT valid: no arm claims anything")
    )
    print(
        f"{'arm':<26} {'pixels to 95 %':>14} {'held from':>10} {'between':>8} {'AUC':>8}"
        f" {'s/seed':>8}"
    )
    for name, result in document["strategies"].items():
        per_seed = result["seconds"] / seeds
        between = result["pixels_to_95_interpolated"]
        print(
            f"{name:<26} {result['pixels_to_95']!s:>14} {result['pixels_to_95_held']!s:>10} "
            f"{'None' if between is None else f'{between:.0f}':>8} {result['auc']:>8.4f}"
            f" {per_seed:>8.0f}"
        )
    print(f"AUC over 0..{document['auc_pixels']} px, each arm against the best control:")
    for name, paired in document["auc_vs_best_control"].items():
        error = paired["standard_error"]
        print(
            f"  {name:<26} {paired['difference']:+.4f}"
            + ("" if error is None else f" ± {error:.4f}")
            + f" vs {paired['control']} ({paired['seeds_ahead']}/{paired['seeds']} seeds ahead)"
        )
    print({k: v for k, v in document.items() if k.startswith("best_")})


def with_readings(document: dict) -> dict:
    """``document`` with the issue's ratios and every arm's AUC against the best control
    added (what a run adds to :func:`tomoloop.active.domain_shift.domain_shift`'s)."""
    return document | ratios(document) | {"auc_vs_best_control": against_best_control(document)}


SHOWN = ("sources_only_miou", "sources_only_seeds", "initial_seeds", "full_data_seeds")
"""The run's figures :func:`show` needs beyond :func:`summarise`'s (runs since 2026-12-05)."""


def reread(path: Path) -> dict:
    """A saved run's document read again with this checkout's reading (:func:`summarise`
    and :func:`with_readings`) from its references and seed curves: no training, the file
    left as it is.

    Raises:
        ValueError: the document lacks a figure :func:`show` needs (written by an older
            run).
    """
    document = json.loads(path.read_text())
    missing = [k for k in SHOWN if k not in document]
    if missing:
        raise ValueError(
            f"{path} has no {', '.join(missing)}: it was written before 2026-12-05's runs; "
            "run its scenario again"
        )
    curves = {n: r["seeds"] for n, r in document["strategies"].items()}
    seconds = {n: r["seconds"] for n, r in document["strategies"].items()}
    document |= summarise(document["initial_miou"], document["full_data_miou"], curves)
    for name, result in document["strategies"].items():
        result["seconds"] = seconds[name]
    return with_readings(document)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="nmc")
    parser.add_argument("--strategies", default=DEFAULT_ARMS)
    parser.add_argument("--unit", choices=("slice", "region"), default="region")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget-px", type=int, default=4096)
    parser.add_argument(
        "--budget-growth",
        type=float,
        default=1.0,
        help="each round labels this many times the pixels of the one before (2: doubling)",
    )
    parser.add_argument("--region", type=int, default=32)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared/data folder")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (split between workers, one each at least)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes running seeds and arms side by side"
    )
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    parser.add_argument(
        "--no-replay",
        dest="replay",
        action="store_false",
        help="fine-tune on the target only (default: source slices too, half the patches)",
    )
    parser.add_argument(
        "--average",
        type=float,
        default=0.0,
        help="every training keeps a moving average of its weights of this decay (0 none)",
    )
    parser.add_argument(
        "--lr", type=float, help="the rounds' fine-tuning learning rate (default the setup's 5e-4)"
    )
    parser.add_argument(
        "--out", type=Path, help="where the .json/.png go (default bench/out/al_shift_<scenario>…)"
    )
    parser.add_argument(
        "--reread",
        type=Path,
        metavar="DOCUMENT",
        help="print a saved run's report with this checkout's reading instead of running "
        "(every other option is ignored)",
    )
    args = parser.parse_args()
    if args.reread:
        try:
            show(reread(args.reread))
        except ValueError as stale:
            parser.error(str(stale))
        return
    if args.workers > 1:
        lifeline.start()  # the workers end with this process, even when it is killed
    torch.set_num_threads(args.threads)
    source, target = write_scenario(args.scenario, args.data)
    setup = ShiftSetup(
        parse_arms(args.strategies, args.unit),
        seeds=args.seeds,
        rounds=args.rounds,
        budget_px=args.budget_px,
        budget_growth=args.budget_growth,
        region=args.region,
        replay=args.replay,
    )
    if args.quick:
        setup = quick(setup)
    if args.average:
        setup = replace(
            setup,
            initial_train=replace(setup.initial_train, average=args.average),
            fine_tune=replace(setup.fine_tune, average=args.average),
        )
    if args.lr is not None:
        setup = replace(setup, fine_tune=replace(setup.fine_tune, lr=args.lr))
    start = time.perf_counter()
    data = read_shift_data([source], target, SCENARIOS[args.scenario][1])
    shifted = {}
    if args.scenario in SHIFTED:
        counts = shifted_slices(data.target, SHIFTED[args.scenario])
        shifted = {"shifted_slices": counts}
        parts = ", ".join(f"{n} {inside} of {total}" for n, (inside, total) in counts.items())
        print(f"the shifted segment's slices in the target's split: {parts}", flush=True)
    document = domain_shift(
        data,
        setup,
        on_curve=lambda name, seed, curve, seconds: print(
            f"{name} seed {seed} ({seconds:.0f} s): " + ", ".join(f"{n}→{m:.4f}" for n, m in curve),
            flush=True,
        ),
        on_reference=lambda initial, full: print(
            f"start {initial:.4f}, full data {full:.4f}", flush=True
        ),
        workers=args.workers,
    )
    document |= {"scenario": args.scenario, "seconds": time.perf_counter() - start} | shifted
    document = with_readings(document)
    tags = (
        ("" if args.replay else "_no_replay")
        + (f"_average{args.average}" if args.average else "")
        + (f"_lr{args.lr:g}" if args.lr is not None else "")
        + (f"_growth{args.budget_growth:g}" if args.budget_growth != 1 else "")
        + ("_quick" if args.quick else "")
    )
    stem = args.out or OUT / f"al_shift_{args.scenario}{tags}"
    # appended, not with_suffix: a tag such as _lr0.0001 holds a dot
    png, saved = (stem.parent / f"{stem.name}{ext}" for ext in (".png", ".json"))
    document["plot"] = str(plot_domain_shift(document, png))
    saved.write_text(json.dumps(document, indent=2))
    show(document)
    print(f"saved {saved} ({document['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
