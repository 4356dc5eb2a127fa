"""Sparse labels in training: unlabelled pixels (IGNORE) never contribute to a loss, in
every loss and every network, and change nothing when every pixel is labelled.
"""

import numpy as np
import pytest
import torch
from conftest import toy_batch

from tomoloop.labels.phases import IGNORE
from tomoloop.networks.losses import LOSSES, cross_entropy
from tomoloop.networks.matphase import curriculum_mask
from tomoloop.networks.registry import build_model
from tomoloop.training.data import DatasetError, LabelledSlice, check_slices, smooth_labels_knn
from tomoloop.training.trainer import compute_loss, mask_unlabelled

TINY = {
    "unet": {"base": 4, "depth": 2},
    "ynet": {"base": 4, "dilated_width": 4},
    "transforcnn": {"dim": 16, "blocks": 2, "base": 4},
    "enet": {"unet": {"base": 4}, "transforcnn": {"dim": 16, "blocks": 2, "base": 4}},
    "lrcsnet": {"base": 4},
    "matphase": {"base": 4, "depth": 2},
}

IMAGES, DENSE = toy_batch(seed=3, n=2, side=32)
UNLABELLED = torch.zeros_like(DENSE, dtype=torch.bool)
UNLABELLED[:, :, 16:] = True  # the right half of every slice is unlabelled
SPARSE = DENSE.masked_fill(UNLABELLED, IGNORE)
WEIGHT = torch.rand(DENSE.shape, generator=torch.Generator().manual_seed(1)) + 0.5


def _loss_and_grad(loss, logits, target, weight):
    logits = logits.clone().requires_grad_(True)
    value = loss(logits, *mask_unlabelled(target, weight))
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("weight", [None, WEIGHT], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_ignore_changes_no_loss_when_every_pixel_is_labelled(name, weight):
    loss = LOSSES[name]
    logits = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    masked, masked_grad = _loss_and_grad(loss, logits, DENSE, weight)
    plain = logits.clone().requires_grad_(True)
    value = loss(plain, DENSE, weight)
    value.backward()
    torch.testing.assert_close(masked, value.detach())
    torch.testing.assert_close(masked_grad, plain.grad)


@pytest.mark.parametrize("weight", [None, WEIGHT], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_unlabelled_pixels_never_contribute_to_a_loss(name, weight):
    loss = LOSSES[name]
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 32, 32, generator=generator)
    other = torch.where(UNLABELLED[:, None], 30 * torch.randn(logits.shape), logits)
    value, grad = _loss_and_grad(loss, logits, SPARSE, weight)
    changed, changed_grad = _loss_and_grad(loss, other, SPARSE, weight)
    assert torch.equal(grad.permute(0, 2, 3, 1)[UNLABELLED], torch.zeros(UNLABELLED.sum(), 3))
    assert grad.abs().sum() > 0
    torch.testing.assert_close(value, changed)
    torch.testing.assert_close(grad, changed_grad)


def _network(name):
    torch.manual_seed(0)
    return build_model(name, 1, 3, **TINY[name])


def _network_loss(model, target, weight, step):
    """Loss and parameter gradients of one seeded training step at progress 0."""
    model.zero_grad()
    torch.manual_seed(7)
    value = step(model, target, weight)
    value.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return value.detach(), grads


def _production(model, target, weight):
    return compute_loss(model, IMAGES, target, weight, cross_entropy, 0.0)


def _unmasked(model, target, weight):
    """The loss step as it was before the ignore index existed."""
    custom = getattr(model, "training_loss", None)
    if custom is not None:
        return custom(IMAGES, target, weight, cross_entropy, 0.0)
    return cross_entropy(model(IMAGES), target, weight)


@pytest.mark.parametrize("weight", [None, WEIGHT], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_the_ignore_changes_no_network_loss_when_every_pixel_is_labelled(name, weight):
    model = _network(name)
    value, grads = _network_loss(model, DENSE, weight, _production)
    before, before_grads = _network_loss(model, DENSE, weight, _unmasked)
    torch.testing.assert_close(value, before)
    assert len(grads) == len(before_grads)
    for g, b in zip(grads, before_grads, strict=True):
        torch.testing.assert_close(g, b)


@pytest.mark.parametrize("name", sorted(TINY))
def test_what_lies_under_unlabelled_pixels_never_reaches_a_network(name):
    """The sparse target, and dense targets with any classes under the unlabelled half
    (weight 0 there), give one loss and one gradient: the classes hidden there cannot count.
    """
    model = _network(name)
    value, grads = _network_loss(model, SPARSE, WEIGHT, _production)
    zeroed = WEIGHT * ~UNLABELLED
    for seed in (0, 1):
        noise = torch.randint(0, 3, DENSE.shape, generator=torch.Generator().manual_seed(seed))
        filled = torch.where(UNLABELLED, noise, DENSE)
        other, other_grads = _network_loss(model, filled, zeroed, _production)
        torch.testing.assert_close(value, other)
        for g, o in zip(grads, other_grads, strict=True):
            torch.testing.assert_close(g, o)


def test_the_matphase_curriculum_ranks_and_admits_labelled_pixels_only():
    difficulty = torch.arange(8.0)
    labelled = torch.tensor([False, True, False, True, False, True, False, True])
    admitted = curriculum_mask(difficulty, 0.0, start=0.5, among=labelled)
    assert admitted.tolist() == [False, True, False, True, False, False, False, False]
    assert curriculum_mask(difficulty, 1.0, among=labelled).tolist() == labelled.tolist()


def test_knn_smoothing_counts_labelled_neighbours_only():
    u = IGNORE
    labels = np.array([[u, u, u], [1, 2, u], [1, u, u]], np.uint8)
    smoothed = smooth_labels_knn(labels, [(1, 2)])
    assert smoothed[1, 1] == 1  # 2 of its 2 labelled neighbours are 1 (of 8 in the image)
    np.testing.assert_array_equal(smoothed == u, labels == u)


def _slice(labels):
    return LabelledSlice(np.zeros(labels.shape, np.float32), labels)


def test_unlabelled_pixels_pass_the_class_check_and_a_split_without_labels_is_refused():
    part = np.full((4, 4), IGNORE, np.uint8)
    part[0, 0] = 2
    check_slices([_slice(part)], 3, "train")
    with pytest.raises(DatasetError, match="train split has no labelled pixel"):
        check_slices([_slice(np.full((4, 4), IGNORE, np.uint8))], 3, "train")
    with pytest.raises(DatasetError, match="class 2 but the model has 2 classes"):
        check_slices([_slice(part)], 2, "train")


def test_a_model_of_more_classes_than_the_ignore_leaves_room_for_is_refused():
    with pytest.raises(DatasetError, match="at most 255"):
        check_slices([_slice(np.zeros((2, 2), np.uint8))], 256, "train")
