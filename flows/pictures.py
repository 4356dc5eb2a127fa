"""Pictures of the loop for people: a slice's prediction and uncertainty, the learning
curve — as PNG files and as Prefect image artifacts of the running flow.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from prefect.artifacts import create_image_artifact
from torch import nn

from tomoloop.inference import normalise
from tomoloop.models import ModelSpec
from tomoloop.report import uncertainty_figure
from tomoloop.scoring import ScoreOptions, uncertainty_map
from tomoloop.stacks import open_stack, percentile_window, to_uint8


def slice_picture(
    network: nn.Module,
    spec: ModelSpec,
    volume_path: str,
    axis: str,
    index: int,
    method: str,
    title: str,
    path: Path,
) -> Path:
    """A PNG of one slice: grey, the model's prediction over it and its per-pixel
    uncertainty by ``method`` (entropy, margin, bald, tta, ensemble)."""
    with open_stack(volume_path) as stack:
        window = percentile_window(stack)
        raw = stack.slice(axis, index)
    options = ScoreOptions(method, tile=spec.tile, overlap=spec.tile // 4)
    unsure, probs = uncertainty_map(network, normalise(raw, window), options)
    return uncertainty_figure(to_uint8(raw, window), probs.argmax(axis=0), unsure, title, path)


def artifact_name(*parts: object) -> str:
    """A Prefect artifact key from ``parts`` (lowercase letters, digits and dashes only)."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


def publish_image(png: Path, key: str, description: str) -> None:
    """``png`` as an image artifact of the running flow, embedded as a data: URI so the
    Prefect UI shows it without a file server in between."""
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    create_image_artifact(f"data:image/png;base64,{encoded}", key=key, description=description)
