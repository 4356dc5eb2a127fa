"""PNG writing shared by exports and pictures."""

from __future__ import annotations

import os

import cv2
import numpy as np

from tomoloop.errors import OutputError


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write a (h, w) 8/16-bit image or an (h, w, 3) RGB uint8 image as PNG."""
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(os.fspath(path), data):
        raise OutputError(f"could not write {path}: check free space and permissions")
