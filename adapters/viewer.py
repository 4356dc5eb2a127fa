"""napari, the viewer ``tomoloop view`` opens: the layers of
:func:`tomoloop.report.layers.volume_layers` in a window, or drawn into a PNG.

napari and a Qt binding are the optional extra ``view`` (``pip install 'tomoloop[view]'``);
this is the only module that imports them. A window needs a display, also for a picture
(napari draws with OpenGL; Qt's ``offscreen`` platform has none): on a machine without
one, run the command under a virtual screen, ``xvfb-run -a tomoloop view …``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomoloop.errors import TomoloopError
from tomoloop.outputs import temp_file_beside, writing
from tomoloop.report.layers import Layer

INSTALL = "pip install 'tomoloop[view]'"
HEADLESS_QT = ("offscreen", "minimal")
"""Qt platforms without a screen, on which napari cannot draw."""
PANEL_PX = 512
"""Longer side (pixels) of one panel of a picture."""


class ViewerUnavailable(TomoloopError):
    """napari or a Qt binding is not installed, or there is no display to draw on."""


def napari_ready() -> Any:
    """The napari module, once a Qt binding loads and there is a display to draw on.

    Raises:
        ViewerUnavailable: napari or every Qt binding is missing; Qt is told to draw
            without a screen (QT_QPA_PLATFORM=offscreen or minimal: no OpenGL, a black
            picture); or, on Linux, neither DISPLAY nor WAYLAND_DISPLAY is set (Qt would
            abort the process).
    """
    try:
        import napari
        import qtpy  # noqa: F401  (napari's Qt shim: raises when no binding is installed)
    except ImportError as exc:
        raise ViewerUnavailable(
            f"tomoloop view needs napari and a Qt binding ({exc}): install them with {INSTALL}"
        ) from exc
    virtual = "under a virtual screen: xvfb-run -a tomoloop view …"
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform in HEADLESS_QT:
        raise ViewerUnavailable(
            f"QT_QPA_PLATFORM={platform} gives napari no OpenGL to draw with: unset it and run "
            "it on a desktop or " + virtual
        )
    screens = ("DISPLAY", "WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not any(os.environ.get(n) for n in screens):
        raise ViewerUnavailable(
            "tomoloop view needs a display (DISPLAY is not set), also for --screenshot: "
            "run it on a desktop, over ssh -X, or " + virtual
        )
    return napari


def show(
    layers: Sequence[Layer],
    index: int,
    *,
    grid: bool = False,
    screenshot: Path | None = None,
    title: str = "tomoloop view",
) -> list[dict]:
    """Show ``layers`` (bottom first) in napari at z slice ``index`` and return the layers
    as napari holds them (:func:`describe`).

    Without ``screenshot`` this returns when the window is closed. With it, the canvas is
    drawn into that PNG (RGB, :data:`PANEL_PX` on a panel's longer side) and the window
    closes at once. ``grid``: one panel per layer above the grey image, side by side, each
    over its own copy of the grey image, all panels following one camera and one slice.
    """
    napari = napari_ready()
    base, above = layers[0], layers[1:]
    panels = len(above) if grid and above else 1
    viewer = napari.Viewer(title=title, show=True)
    try:
        for layer in [d for top in above for d in (base, top)] if panels > 1 else layers:
            add_layer(viewer, layer)
        viewer.dims.set_current_step(0, index)
        if panels > 1:
            viewer.grid.enabled = True
            viewer.grid.stride = 2
            viewer.grid.shape = (1, panels)
        viewer.scale_bar.visible = base.scale is not None
        listing = [describe(layer) for layer in viewer.layers]
        image = None if screenshot is None else picture(viewer, base, panels)
    except BaseException:
        viewer.close()
        raise
    if screenshot is None:
        napari.run()  # until the window is closed, which closes the viewer
    else:
        viewer.close()
        save_png(image, screenshot)
    return listing


def add_layer(viewer: Any, layer: Layer) -> None:
    """Add one :class:`Layer` to a napari viewer."""
    common = {
        "name": layer.name,
        "scale": layer.scale or (1.0, 1.0, 1.0),
        "units": ("um" if layer.scale else "pixel",) * 3,
        "opacity": layer.opacity,
        "metadata": {"source": layer.source},
    }
    if layer.kind == "image":
        viewer.add_image(
            layer.data, contrast_limits=layer.contrast, colormap=layer.colormap, **common
        )
        return
    if not layer.classes:
        viewer.add_labels(layer.data, **common)
        return
    from napari.utils.colormaps import DirectLabelColormap

    colours: dict[int | None, tuple[float, ...]] = {None: (0.0, 0.0, 0.0, 0.0)}
    colours.update({value: rgba for value, (_, rgba) in layer.classes.items()})
    viewer.add_labels(
        layer.data,
        colormap=DirectLabelColormap(color_dict=colours),
        features={  # the phase under the cursor, in napari's status bar
            "index": list(layer.classes),
            "phase": [name for name, _ in layer.classes.values()],
        },
        **common,
    )


def describe(layer: Any) -> dict:
    """A napari layer as JSON: name, kind ("image" / "labels"), (z, y, x) shape, dtype,
    scale (µm, or voxels), opacity, blending, the stack source; an image's contrast limits
    and colormap; a labels layer's phase names by value (empty: napari's colours)."""
    row: dict[str, Any] = {
        "name": layer.name,
        "kind": type(layer).__name__.lower(),
        "shape": list(layer.data.shape),
        "dtype": str(layer.data.dtype),
        "scale": [float(s) for s in layer.scale],
        "opacity": float(layer.opacity),
        "blending": str(layer.blending),
        "source": layer.metadata.get("source"),
    }
    if row["kind"] == "image":
        row["contrast_limits"] = [float(c) for c in layer.contrast_limits]
        row["colormap"] = layer.colormap.name
    else:
        features = layer.features
        row["phases"] = (
            dict(zip(features["index"].tolist(), features["phase"].tolist(), strict=True))
            if "phase" in features
            else {}
        )
    return row


def picture(viewer: Any, base: Layer, panels: int) -> np.ndarray:
    """The canvas as an (h, w, 3) uint8 RGB image: ``panels`` side by side, each
    :data:`PANEL_PX` on its longer side, shaped like the grey slice (µm) it shows whole."""
    from qtpy.QtWidgets import QApplication

    _, ny, nx = base.data.shape
    _, sy, sx = base.scale or (1.0, 1.0, 1.0)
    height, width = ny * sy, nx * sx
    zoom = PANEL_PX / max(height, width)  # canvas pixels per µm (or voxel)
    QApplication.processEvents()  # lay the window out, then centre the camera on the data
    viewer.reset_view()
    viewer.camera.zoom = zoom * 0.95  # a margin around each panel
    size = (round(height * zoom), round(width * zoom) * panels)
    return np.asarray(viewer.screenshot(canvas_only=True, size=size))[..., :3]


def save_png(image: np.ndarray, path: Path) -> None:
    """Write an (h, w, 3) uint8 RGB image as a PNG at ``path``, whole or not at all.

    Raises:
        OutputError: the disk refused the write (full, read-only, no permission).
    """
    from PIL import Image

    with writing("--screenshot", path):
        tmp = temp_file_beside(path)
        try:
            Image.fromarray(image).save(tmp, format="PNG", optimize=True)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
