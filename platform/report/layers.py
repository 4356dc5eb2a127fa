"""What a viewer shows of one volume: the grey image, its labels, a prediction and its
uncertainty as layers, each reading its stack lazily and saying how it is drawn. Nothing
here knows the viewer: :mod:`tomoloop.adapters.viewer` draws the layers in napari.

Phases get the colours the OME-Zarr export gives them (:data:`tomoloop.stacks.ngff.PALETTE`,
in phase-map order), so a phase looks the same whichever way its labels are opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tomoloop.labels.phases import PhaseMap
from tomoloop.stacks.array import StackArray
from tomoloop.stacks.ngff import PALETTE
from tomoloop.stacks.stack import Stack, VoxelSize
from tomoloop.stacks.window import percentile_window

RGBA = tuple[float, float, float, float]


@dataclass(frozen=True)
class Layer:
    """One layer of a volume view.

    Attributes:
        name: what the viewer lists it as ("gray", "labels", "prediction", "uncertainty").
        kind: "image" (grey values, uncertainty) or "labels" (integer classes).
        data: the (z, y, x) voxels, read a slice at a time.
        source: the stack source the voxels come from.
        scale: (z, y, x) µm per voxel; None when the voxel size is unknown (voxels).
        opacity: 0 (invisible) … 1 (opaque).
        contrast: an image's stored values drawn at the colormap's two ends (lo, hi).
        colormap: an image's colormap, by its name in napari and matplotlib.
        classes: a labels layer's value → (phase name, RGBA 0–1); values not in it are
            transparent. Empty: the viewer's own colour for each value.
    """

    name: str
    kind: Literal["image", "labels"]
    data: StackArray
    source: str
    scale: VoxelSize | None
    opacity: float = 1.0
    contrast: tuple[float, float] | None = None
    colormap: str = "gray"
    classes: Mapping[int, tuple[str, RGBA]] = field(default_factory=dict)


def phase_colour(k: int) -> RGBA:
    """RGBA (0–1) of the ``k``-th phase of a phase map."""
    r, g, b, a = (c / 255 for c in PALETTE[k % len(PALETTE)])
    return (r, g, b, a)


def volume_layers(
    gray: Stack,
    labels: Stack | None = None,
    prediction: Stack | None = None,
    uncertainty: Stack | None = None,
    phases: PhaseMap | None = None,
) -> list[Layer]:
    """The layers of one volume, bottom to top: the grey image (contrast from its 0.5–99.5 %
    percentiles, :func:`~tomoloop.stacks.window.percentile_window`), the label stack (phase
    values, named and coloured by ``phases``), the prediction (class indices: class k is
    the k-th phase, as ``tomoloop predict`` writes them) and the uncertainty (per-voxel
    entropy in nats, inferno, 70 % opaque). Every layer takes the grey stack's voxel
    size; the stacks must be open while the layers are drawn.
    """
    scale = gray.voxel_size
    window = percentile_window(gray)
    contrast = (window.lo, window.hi)
    layers = [Layer("gray", "image", StackArray.of(gray), gray.source, scale, contrast=contrast)]
    names = phases.names if phases is not None else ()
    for name, stack, values in (
        ("labels", labels, phases.values if phases is not None else ()),
        ("prediction", prediction, range(len(names))),
    ):
        if stack is None:
            continue
        colours = {
            v: (n, phase_colour(k)) for k, (n, v) in enumerate(zip(names, values, strict=True))
        }
        data = StackArray.of(stack, np.uint8 if stack.dtype == np.bool_ else None)
        layers.append(Layer(name, "labels", data, stack.source, scale, 0.5, classes=colours))
    if uncertainty is not None:
        spread = percentile_window(uncertainty)
        data = StackArray.of(uncertainty)
        layers.append(
            Layer(
                "uncertainty",
                "image",
                data,
                uncertainty.source,
                scale,
                opacity=0.7,
                contrast=(spread.lo, spread.hi),
                colormap="inferno",
            )
        )
    return layers
