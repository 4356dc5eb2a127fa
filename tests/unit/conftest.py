"""Fixtures for unit tests of the segmentation networks, and the loader of bench scripts."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tomoloop.metrics.semantic import confusion_matrix, scores
from tomoloop.networks.losses import cross_entropy
from tomoloop.training.trainer import compute_loss


def toy_batch(seed: int = 0, n: int = 4, side: int = 32, n_classes: int = 3):
    """(n, 1, side, side) float images and (n, side, side) int64 labels: discs of class 1
    (bright) and squares of class 2 (mid grey) on a dark noisy background (class 0).
    """
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    labels = torch.zeros(n, side, side, dtype=torch.long)
    for i in range(n):
        for _ in range(3):
            cy, cx = torch.randint(5, side - 5, (2,), generator=generator).tolist()
            r = int(torch.randint(3, 6, (1,), generator=generator))
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        if n_classes > 2:
            cy, cx = torch.randint(0, side - 8, (2,), generator=generator).tolist()
            labels[i, cy : cy + 8, cx : cx + 8] = 2
    grey = torch.tensor([0.0, 1.0, 0.5])[labels]
    images = grey + 0.1 * torch.randn(n, side, side, generator=generator)
    return images[:, None], labels


def overfit_miou(
    build: Callable[[], torch.nn.Module], steps: int = 200, lr: float = 3e-3, **batch
) -> float:
    """Build a network with the torch seed fixed, train it on one fixed toy batch for
    ``steps`` Adam steps with the production loss step
    (:func:`tomoloop.training.compute_loss`); mIoU on that batch in eval mode.
    """
    torch.manual_seed(0)
    model = build()
    images, labels = toy_batch(**batch)
    n_classes = batch.get("n_classes", 3)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        optimiser.zero_grad()
        compute_loss(model, images, labels, None, cross_entropy, step / steps).backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    return scores(confusion_matrix(labels.numpy(), predicted.numpy(), n_classes)).miou


@pytest.fixture
def overfit():
    """:func:`overfit_miou`, for tests that check a network learns."""
    return overfit_miou


@pytest.fixture
def one_thread():
    """One torch thread: tiny networks on a shared, loaded machine run many times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    """The script ``bench/<name>.py`` as a module, ``bench/`` on the import path while it
    loads (the scripts import their neighbours, as when run from there)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module
