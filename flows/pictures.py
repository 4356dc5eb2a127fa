"""Pictures of the loop for people: a slice's prediction and uncertainty, the learning
curve — as PNG files and as Prefect image artifacts of the running flow.
"""

from __future__ import annotations

import base64
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from prefect import get_run_logger
from prefect.artifacts import create_image_artifact
from torch import nn

from tomoloop.active.scoring import ScoreOptions, uncertainty_map
from tomoloop.inference.predict import default_overlap, normalise
from tomoloop.networks.registry import ModelSpec
from tomoloop.report.plots import uncertainty_figure
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.window import percentile_window, to_uint8


def slice_picture(
    network: nn.Module,
    spec: ModelSpec,
    volume_path: str,
    axis: str,
    index: int,
    method: str,
    title: str,
    path: Path,
    device: str | torch.device = "cpu",
) -> Path:
    """A PNG of one slice: grey, the model's prediction over it and its per-pixel
    uncertainty by ``method`` (entropy, margin, bald, tta, ensemble); ``network`` lives on
    ``device``."""
    with open_stack(volume_path) as stack:
        window = percentile_window(stack)
        raw = stack.slice(axis, index)
    options = ScoreOptions(
        method, tile=spec.tile, overlap=default_overlap(spec.tile), device=device
    )
    unsure, probs = uncertainty_map(network, normalise(raw, window), options)
    return uncertainty_figure(to_uint8(raw, window), probs.argmax(axis=0), unsure, title, path)


def artifact_name(*parts: object) -> str:
    """A Prefect artifact key from ``parts`` (lowercase letters, digits and dashes only)."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


def publish_image(draw: Callable[[Path], Path], key: str, description: str) -> None:
    """The PNG ``draw(path)`` writes, as an image artifact of the running flow, embedded as
    a data: URI so the Prefect UI shows it without a file server in between.

    Best effort: the picture is for people, so a failure to draw or publish it is logged
    as a warning and never fails the flow (a round is already open when it is drawn).
    """
    try:
        with tempfile.TemporaryDirectory() as tmp:
            png = draw(Path(tmp) / "picture.png")
            encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        create_image_artifact(f"data:image/png;base64,{encoded}", key=key, description=description)
    except Exception as exc:  # any failure: see the docstring
        get_run_logger().warning("picture %s not published: %s", key, exc)
