"""The source → target scenarios of ``bench/al_efficiency.py`` (issue 18): each a function
of the ``shared/data`` folder returning (source gray, labels), (target gray, labels).

Eight scenarios, each a model trained on one scan meeting another part of the material
imaged differently:

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
* ``wetted``: a wetting front. The same crops as ``nmc``; the target imaged as the source
  (another noise draw) except its first height quarter (``WET``, z 0–23), whose pores hold
  electrolyte: the cell was scanned while the electrolyte had risen only that far. The
  electrolyte absorbs as the carbon binder does (``WET_LEVELS``: pore 9,000 → 16,000, the
  binder's level), the low electrolyte/binder contrast of wet cathodes; NMC and binder
  keep their levels. There the pore (37 % of the segment) sits nearer the sources' binder
  than their pore once the PSF has blurred it (17,003 against 19,051 and 10,436), and pore
  and binder share one grey level, so only their shapes tell them apart: no selection of
  a source model repairs it, and the labels must teach the shapes.
* ``ellipsoids``: ``rescaled`` on another material. The MATBOX ellipsoid packing
  (background, solid), forward-modelled with the NMC crops' pore and NMC levels (9,000,
  36,000), PSF σ 1, noise σ 1800. Source: z 0–95, y/x 0–127; target: z 104–199,
  y/x 72–199, imaged as the source (another noise draw) except the ``SEGMENT`` height
  quarter (z 48–71), whose grey values are halved (``ELLIPSOIDS_RESCALE``): projections
  binned 2×2 reconstructed with the unbinned pixel size. There the solid (16,187 after the
  PSF) sits nearer the sources' background (14,188) than their solid (32,546), and the
  background (7,069) below either source phase's mean.
* ``weave``: NASA PuMA woven composite, the real CT grey values and their 3-class labels.
  Source: z 0–74. Target: z 75–149 resampled to a 1.4× coarser voxel (grey values linear,
  labels nearest), blurred (σ 0.8) and with noise added (σ 12 grey values).
* ``weave_rescaled``: ``rescaled`` on real CT grey values. The PuMA weave, source z 0–74
  as in ``weave``; the target z 75–149 as scanned (no resampling, blur or noise) except
  its third height quarter (``WEAVE_SEGMENT``, z 38–56 of the 75), whose grey values are
  halved (``WEAVE_RESCALE``): its tows (170–197 elsewhere in the target, 169–185 in the
  sources) land on the sources' background level (88), its background below it (35).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from tomoloop.demo import new_scan
from tomoloop.labels.phases import PhaseMap
from tomoloop.labels.synthetic import beam_hardening, forward_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # --data for a checkout elsewhere
SourceTarget = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(source gray, source labels), (target gray, target labels): (z, y, x) grey values
(uint16 for the MATBOX crops, uint8 for the weave) and uint8 class indices."""
MATBOX_PHASES = PhaseMap.parse("pore=0,nmc=1,cbd=2")
WEAVE_PHASES = PhaseMap.parse("background=0,phase1=1,phase2=2")
ELLIPSOID_PHASES = PhaseMap.parse("background=0,solid=1")


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


WET = slice(0, 24)
"""The ``wetted`` target's height segment whose pores hold electrolyte (its first quarter)."""
WET_LEVELS = (16000.0, 36000.0, 16000.0)
"""``forward_model``'s grey levels (pore, NMC, binder) where the pores hold electrolyte: the
pore on the binder's level."""


def wetted(data: Path) -> SourceTarget:
    """(96, 128, 128) uint16 grey values: the target imaged as the source but ``WET`` with
    ``WET_LEVELS`` (the same noise draw and PSF, so the wetting front is the only seam)."""
    source, target = _nmc_crops(data)
    target_gray = forward_model(target, seed=2)
    target_gray[WET] = forward_model(target, grey_levels=WET_LEVELS, seed=2)[WET]
    return (forward_model(source, seed=1), source), (target_gray, target)


def cupping(data: Path) -> SourceTarget:
    source, target = _nmc_crops(data)
    return (forward_model(source, seed=1), source), (new_scan(target, seed=2), target)


ELLIPSOID_LEVELS = (9000.0, 36000.0)
"""``forward_model``'s grey levels (background, solid) of the ellipsoid packing."""
ELLIPSOIDS_RESCALE = 0.5
"""The ``ellipsoids`` scale of the target's ``SEGMENT``: a 2×2 binning reconstructed with
the unbinned pixel size."""


def ellipsoids(data: Path) -> SourceTarget:
    """(96, 128, 128) uint16 grey values: two crops of the ellipsoid packing imaged alike,
    the target's ``SEGMENT`` scaled by ``ELLIPSOIDS_RESCALE``."""
    labels = tifffile.imread(data / "matbox_ellipsoids_labels.tif")
    source = np.ascontiguousarray(labels[0:96, 0:128, 0:128])
    target = np.ascontiguousarray(labels[104:200, 72:200, 72:200])
    imaged = forward_model(target, grey_levels=ELLIPSOID_LEVELS, seed=2)
    return (
        (forward_model(source, grey_levels=ELLIPSOID_LEVELS, seed=1), source),
        (_scaled(imaged, SEGMENT, ELLIPSOIDS_RESCALE), target),
    )


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


SHIFTED = {
    "segment": SEGMENT,
    "rescaled": SEGMENT,
    "wetted": WET,
    "ellipsoids": SEGMENT,
    "weave_rescaled": WEAVE_SEGMENT,
}
"""The target's z slices each height-segment scenario shifts (the others shift it all)."""

SCENARIOS = {
    "nmc": (nmc, MATBOX_PHASES),
    "cupping": (cupping, MATBOX_PHASES),
    "weave": (weave, WEAVE_PHASES),
    "segment": (segment, MATBOX_PHASES),
    "rescaled": (rescaled, MATBOX_PHASES),
    "wetted": (wetted, MATBOX_PHASES),
    "ellipsoids": (ellipsoids, ELLIPSOID_PHASES),
    "weave_rescaled": (weave_rescaled, WEAVE_PHASES),
}
