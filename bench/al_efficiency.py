"""Benchmark: label efficiency of the query arms when a model meets a new scan (issue 18).

Six source → target scenarios from ../shared/data, each a model trained on one scan meeting
another part of the material imaged differently:

* ``nmc``: MATBOX NMC cathode labels (pore, NMC, carbon binder). Source: a 128² crop of
  z 0–95 forward-modelled as in ``bench/seg_quality.py`` (PSF σ 1, noise σ 1800). Target:
  another crop (z 120–215, y/x 160–287) imaged with less binder contrast, a wider PSF
  (σ 1.6), more noise (σ 3000) and beam-hardening drift (radial cupping of 25 % and a
  15 % intensity drift along z).
* ``cupping``: the same crops as ``nmc``; the target imaged as ``make demo``'s new scan
  (``tomoloop.demo.new_scan``): a harder beam (radial cupping of 35 %, a 20 % drift along
  z), a wider PSF (σ 1.2) and less binder contrast at the source's noise (σ 1800). The
  shifted model is wrong mostly where the cupping moves grey values (the slices' centres).
* ``segment``: a multi-height scan wrong in one place. The same crops as ``nmc``; the
  target imaged as the source (another noise draw) except one of its four height
  segments (z 48–71 of the crop), acquired under the ``nmc`` target's harder conditions.
  The shifted model is right on three quarters of the target and wrong on the rest, the
  case the issue names ("wrong in a few places"): random units land there a quarter of
  the time.
* ``rescaled``: a scan wrong in one place that selecting a source model cannot repair.
  The same crops as ``nmc``; the target imaged as the source (another noise draw) except
  the ``segment`` height segment (z 48–71), whose grey values are scaled by 9/16 — that
  height reconstructed with another scale of attenuation values (a wrong pixel size given
  to the reconstruction scales every value). Its binder lands on the sources' pore level
  (16,000 → 9,000), its NMC on the sources' binder level once the PSF has blurred both
  (36,000 → 20,250; 19,204 against the sources' binder mean 19,051), its pore below
  anything the sources show (9,000 → 5,063). Every model trained on the sources maps
  those grey values to the wrong phases, so no choice of epoch on the target's val split
  makes it right there; only labels from that segment can.
* ``weave``: NASA PuMA woven composite, the real CT grey values and their 3-class labels.
  Source: z 0–74. Target: z 75–149 resampled to a 1.4× coarser voxel (grey values linear,
  labels nearest), blurred (σ 0.8) and with noise added (σ 12 grey values).
* ``weave_rescaled``: ``rescaled`` on real CT grey values. The PuMA weave, source z 0–74
  as in ``weave``; the target z 75–149 as scanned (no resampling, blur or noise) except
  its third height quarter (``WEAVE_SEGMENT``, z 38–56 of the 75), whose grey values are
  halved (``WEAVE_RESCALE``): its tows (170–197 elsewhere in the target, 169–185 in the
  sources) land on the sources' background level (88), its background below it (35).

The direct oracle answers from the labels. Reports per arm the labelled target pixels to
reach 95 % of the gain (``full − initial``) and the ratios the issue's target names: the
best tomoloop arm against the best random control, and the best region arm against the
best slice arm. Also every arm's AUC over the labelled range all arms share, against the
control with the highest AUC seed by seed (mean difference ± standard error, seeds ahead).

Run: ``.venv/bin/python bench/al_efficiency.py --scenario nmc [--seeds 3] [--rounds 5]``
(``--quick`` for a CI-sized run); writes ``bench/out/al_shift_<scenario>.json`` and ``.png``.
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
from scipy import ndimage

from tomoloop import lifeline
from tomoloop.active.domain_shift import domain_shift
from tomoloop.active.shift_setup import (
    DEFAULT_ARMS,
    ShiftSetup,
    parse_arms,
    quick,
    read_shift_data,
)
from tomoloop.demo import new_scan
from tomoloop.labels.phases import PhaseMap
from tomoloop.labels.synthetic import beam_hardening, forward_model
from tomoloop.report.plots import plot_domain_shift

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # --data for a checkout elsewhere
OUT = ROOT / "bench" / "out"
CONTROLS = ("random/slice", "random/region", "foreground_random/region")
SourceTarget = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(source gray, source labels), (target gray, target labels): (z, y, x) grey values
(uint16 for the MATBOX crops, uint8 for the weave) and uint8 class indices."""
MATBOX_PHASES = PhaseMap.parse("pore=0,nmc=1,cbd=2")
WEAVE_PHASES = PhaseMap.parse("background=0,phase1=1,phase2=2")


def _nmc_crops(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The source and target label crops of the MATBOX NMC labels (z, y, x) uint8."""
    labels = tifffile.imread(data / "matbox_nmc_cbd_labels.tif")
    source = np.ascontiguousarray(labels[0:96, 0:128, 0:128])
    return source, np.ascontiguousarray(labels[120:216, 160:288, 160:288])


def _harder_imaging(labels: np.ndarray, seed: int) -> np.ndarray:
    """(z, y, x) uint16 grey values of ``labels`` imaged as the ``nmc`` target is: less
    binder contrast, PSF σ 1.6, noise σ 3000, 25 % cupping and a 15 % drift along z."""
    shifted = forward_model(
        labels, grey_levels=(9000.0, 30000.0, 12500.0), psf_sigma=1.6, noise_sigma=3000.0,
        seed=seed,
    ).astype(np.float32)  # fmt: skip
    return np.clip(beam_hardening(shifted, 0.25, 0.15), 0, 65535).astype(np.uint16)


def nmc(data: Path) -> SourceTarget:
    source, target = _nmc_crops(data)
    return (forward_model(source, seed=1), source), (_harder_imaging(target, seed=2), target)


SEGMENT = slice(48, 72)
"""The target's height segment of the ``segment`` scenario imaged differently."""


def segment(data: Path) -> SourceTarget:
    source, target = _nmc_crops(data)
    target_gray = forward_model(target, seed=2)
    target_gray[SEGMENT] = _harder_imaging(target[SEGMENT], seed=3)
    return (forward_model(source, seed=1), source), (target_gray, target)


RESCALE = 9000.0 / 16000.0
"""The ``rescaled`` scenario's scale of one height segment's grey values: the binder's
source level (``forward_model``'s 16,000) lands on the source's pore level (9,000)."""


def _scaled(gray: np.ndarray, z: slice, scale: float) -> np.ndarray:
    """``gray`` (z, y, x) with the slices ``z`` scaled by ``scale``: rounded half to even
    and clipped to the dtype's range, the dtype kept."""
    out = gray.copy()
    top = np.iinfo(gray.dtype).max
    out[z] = np.clip((gray[z] * scale).round(), 0, top).astype(gray.dtype)
    return out


def rescaled(data: Path) -> SourceTarget:
    """(96, 128, 128) uint16 grey values: the target imaged as the source but ``SEGMENT``
    scaled by ``RESCALE``."""
    source, target = _nmc_crops(data)
    target_gray = _scaled(forward_model(target, seed=2), SEGMENT, RESCALE)
    return (forward_model(source, seed=1), source), (target_gray, target)


def cupping(data: Path) -> SourceTarget:
    source, target = _nmc_crops(data)
    return (forward_model(source, seed=1), source), (new_scan(target, seed=2), target)


def _weave_halves(data: Path) -> SourceTarget:
    """The PuMA weave's (gray, labels) of z 0–74 (the sources) and of z 75–149 as scanned,
    each (75, 150, 150) uint8."""
    gray = tifffile.imread(data / "puma_small_weave_gray.tif")
    labels = tifffile.imread(data / "puma_small_weave_labels.tif")
    lower, upper = slice(0, 75), slice(75, 150)
    return (gray[lower].copy(), labels[lower].copy()), (gray[upper].copy(), labels[upper].copy())


def weave(data: Path) -> SourceTarget:
    source, (gray, labels) = _weave_halves(data)
    zoom = 1 / 1.4
    coarse = ndimage.zoom(gray.astype(np.float32), zoom, order=1)
    coarse_labels = ndimage.zoom(labels, zoom, order=0)
    coarse = ndimage.gaussian_filter(coarse, 0.8)
    coarse += np.random.default_rng(3).normal(0.0, 12.0, coarse.shape).astype(np.float32)
    target = (np.clip(coarse, 0, 255).astype(np.uint8), coarse_labels)
    return source, target


WEAVE_SEGMENT = slice(38, 57)
"""The ``weave_rescaled`` target's height segment (its third quarter) scaled."""
WEAVE_RESCALE = 0.5
"""The ``weave_rescaled`` scale: the target's tows (mean 170–197) onto the sources'
background (88)."""


def weave_rescaled(data: Path) -> SourceTarget:
    """(75, 150, 150) uint8 grey values: the target as scanned but ``WEAVE_SEGMENT`` scaled
    by ``WEAVE_RESCALE``."""
    source, (gray, labels) = _weave_halves(data)
    return source, (_scaled(gray, WEAVE_SEGMENT, WEAVE_RESCALE), labels)


SCENARIOS = {
    "nmc": (nmc, MATBOX_PHASES),
    "cupping": (cupping, MATBOX_PHASES),
    "weave": (weave, WEAVE_PHASES),
    "segment": (segment, MATBOX_PHASES),
    "rescaled": (rescaled, MATBOX_PHASES),
    "weave_rescaled": (weave_rescaled, WEAVE_PHASES),
}


def write_scenario(name: str, data: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """The scenario's source and target (gray, labels) TIFFs under bench/out/<name>/, each
    written beside and renamed into place: runs of one scenario side by side never read a
    half-written file."""
    folder = OUT / name
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


def ratios(document: dict) -> dict:
    """The issue's two ratios of pixels to 95 % of the gain (None where a side never
    reaches it): best tomoloop arm / best random control, best region arm / best slice arm;
    and the same two of the pixels from which the mean curve holds the level to its end
    (``…_held``), which a crossing followed by a fall back does not count.
    """
    out = {}
    for key, suffix in (("pixels_to_95", ""), ("pixels_to_95_held", "_held")):
        reached = {n: r[key] for n, r in document["strategies"].items()}
        ours = _fewest(reached, [n for n in reached if n not in CONTROLS])
        control = _fewest(reached, [n for n in reached if n in CONTROLS])
        region = _fewest(reached, [n for n in reached if n.endswith("/region")])
        slices = _fewest(reached, [n for n in reached if n.endswith("/slice")])
        out[f"best_arm_vs_best_control{suffix}"] = ours / control if ours and control else None
        out[f"best_region_vs_best_slice{suffix}"] = region / slices if region and slices else None
    return out


def _fewest(reached: dict[str, int | None], names: list[str]) -> int | None:
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
    args = parser.parse_args()
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
    document |= {"scenario": args.scenario, "seconds": time.perf_counter() - start}
    document |= ratios(document)
    document["auc_vs_best_control"] = against_best_control(document)
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
    print(f"{'arm':<26} {'pixels to 95 %':>14} {'held from':>10} {'AUC':>8} {'s/seed':>8}")
    for name, result in document["strategies"].items():
        per_seed = result["seconds"] / setup.seeds
        print(
            f"{name:<26} {result['pixels_to_95']!s:>14} {result['pixels_to_95_held']!s:>10} "
            f"{result['auc']:>8.4f} {per_seed:>8.0f}"
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
    print(f"saved {saved} ({document['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
