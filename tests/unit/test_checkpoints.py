"""A checkpoint is a file someone may hand you: every loader reads weights only, refuses a
pickled object with one line, and never runs the code such an object carries.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from tomoloop.checkpoints import CheckpointError


class _Payload:
    """Unpickling this creates ``path`` (what a malicious checkpoint would do instead)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _hostile(marker: Path) -> bytes:
    """Our own checkpoint layout, with one pickled object among the values."""
    buffer = io.BytesIO()
    document = {"kind": "flawnet", "spec": {}, "cfg": "", "config": {}, "categories": []}
    torch.save({**document, "state": _Payload(marker), "model": {}}, buffer)
    return buffer.getvalue()


def _load_model(data: bytes):
    from tomoloop.networks.registry import load_model

    return load_model(data)


def _load_flaw_classifier(data: bytes):
    from tomoloop.particles.flaws import load_classifier

    return load_classifier(data, torch.device("cpu"))


def _load_maskrcnn(data: bytes):
    d2 = pytest.importorskip("tomoloop.adapters.detectron2")
    return d2.load(data, torch.device("cpu"))


@pytest.mark.parametrize("load", [_load_model, _load_flaw_classifier, _load_maskrcnn])
def test_a_checkpoint_carrying_a_pickled_object_is_refused_unopened(load, tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(CheckpointError, match="is refused: it is not a plain weights checkpoint"):
        load(_hostile(marker))
    assert not marker.exists()


@pytest.mark.parametrize(
    "head", [{}, {"dense": 16, "batch_norm": False}]
)  # tomoloop's head and the published dense one
def test_our_flaw_classifier_checkpoint_loads_weights_only(head):
    from tomoloop.particles.flaws import FlawTrainConfig, load_classifier, save_classifier

    config = FlawTrainConfig(widths=(4, 8), **head)
    net = config.build().eval()
    again = load_classifier(save_classifier(net, config), torch.device("cpu"))
    image = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        assert torch.equal(net(image), again(image))
