"""The demo's sample: a generated NMC electrode with exact labels and the rough labels a
scientist would bring.

Rough labels carry a labelling bias of the kind Su et al. 2022 (abstract; docs/references.md)
measure: the thin carbon-binder domain under-segmented (eroded by a pixel in every slice) — the
direction is tomoloop's choice (Su et al. find thresholding overestimates the binder). Active
learning then has something real to fix: the annotator (the oracle, answering from the exact labels)
corrects the slices the model is least sure about.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tomoloop.active.oracle import Behaviour, answer
from tomoloop.labels.phases import PhaseMap
from tomoloop.labels.synthetic import (
    ELECTRODE_PHASES,
    beam_hardening,
    forward_model,
    make_electrode,
)
from tomoloop.stacks.tiff import write_stack

ROUGH_BIAS = {"cbd": -1}


def rough_labels(
    gold: np.ndarray, phases: PhaseMap, bias: Mapping[str, int] = ROUGH_BIAS
) -> np.ndarray:
    """(Z, Y, X) class volume labelled slice by slice with a per-phase bias (pixels to
    dilate, negative to erode) — how a person or a 2D binarisation labels a stack.
    """
    how = Behaviour(bias=dict(bias))
    return np.stack([answer(s, phases.names, how) for s in gold]).astype(gold.dtype)


def new_scan(labels: np.ndarray, seed: int = 1) -> np.ndarray:
    """(Z, Y, X) uint16 grey values of the electrode ``labels`` scanned again, imaged
    differently: a harder beam — strong radial cupping (35 %: the centre of each slice
    darker than its edge) and a 20 % intensity drift along z — a wider PSF (σ 1.2 voxels)
    and less binder contrast (grey levels 9000 / 33000 / 14000 against 9000 / 36000 /
    16000), at the first scan's noise (σ 1800). A model trained on the first scan is wrong
    where the cupping moves a phase's grey values onto another's, mostly the slices'
    centres; labels of the new scan can teach it (``docs/al_domain_shift.md``, scenario
    ``cupping``: the noisier ``nmc`` target left too little to learn for a demo).
    """
    shifted = forward_model(
        labels, grey_levels=(9000.0, 33000.0, 14000.0), psf_sigma=1.2, noise_sigma=1800.0,
        seed=seed,
    ).astype(np.float32)  # fmt: skip
    return np.clip(beam_hardening(shifted, 0.35, 0.2), 0, 65535).astype(np.uint16)


def generate_sample(folder: Path, seed: int = 0) -> tuple[Path, Path, Path, Path]:
    """Write a synthetic NMC electrode into ``folder``: ``gray.tif`` (uint16),
    ``rough.tif`` (biased labels, uint8), ``gold.tif`` (exact labels, uint8) and
    ``new_scan.tif`` (uint16, the same electrode imaged differently, :func:`new_scan`).
    """
    electrode = make_electrode(seed=seed)
    gray = write_stack(folder / "gray.tif", electrode.gray, electrode.voxel_size)
    rough = write_stack(
        folder / "rough.tif", rough_labels(electrode.labels, ELECTRODE_PHASES), electrode.voxel_size
    )
    gold = write_stack(folder / "gold.tif", electrode.labels, electrode.voxel_size)
    again = new_scan(electrode.labels, seed + 1)
    second = write_stack(folder / "new_scan.tif", again, electrode.voxel_size)
    return gray, rough, gold, second
