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
from tomoloop.labels.synthetic import ELECTRODE_PHASES, make_electrode
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


def generate_sample(folder: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write a synthetic NMC electrode into ``folder``: ``gray.tif`` (uint16),
    ``rough.tif`` (biased labels, uint8) and ``gold.tif`` (exact labels, uint8).
    """
    electrode = make_electrode(seed=seed)
    gray = write_stack(folder / "gray.tif", electrode.gray, electrode.voxel_size)
    rough = write_stack(
        folder / "rough.tif", rough_labels(electrode.labels, ELECTRODE_PHASES), electrode.voxel_size
    )
    gold = write_stack(folder / "gold.tif", electrode.labels, electrode.voxel_size)
    return gray, rough, gold
