"""Daemi et al. 2022's flaw rule (docs/references.md), classifier inputs, the flaw classifier
learning, 3-phase maps."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from tomoloop.labels.synthetic import cracked_particles
from tomoloop.particles.flaws import (
    SEED_FLAWS,
    FlawError,
    FlawTrainConfig,
    classifier_input,
    flaw_volume,
    is_flawed,
    labelled_inputs,
    load_classifier,
    save_classifier,
    slice_indices,
    slice_scores,
    three_phase,
    train_classifier,
)


@pytest.mark.parametrize(
    ("scores", "flawed"),
    [
        ([0.4] * 10, True),  # exactly the threshold counts as flawed
        ([0.39] * 10, False),
        ([0.0] * 6 + [1.0] * 4, True),  # mean 0.4
        ([0.0] * 7 + [1.0] * 3, False),  # mean 0.3: three confident slices are not enough
        ([0.9], True),
    ],
)
def test_the_flaw_rule_is_the_mean_score_against_0_4(scores, flawed):
    assert is_flawed(np.array(scores)) is flawed


def test_the_flaw_rule_needs_a_score():
    with pytest.raises(FlawError, match="at least one scored slice"):
        is_flawed(np.array([]))


def test_ten_slices_within_the_central_80_percent_of_the_height():
    chosen = slice_indices(0, 100)
    assert len(chosen) == 10 and chosen[0] >= 10 and chosen[-1] <= 89
    assert all(20 <= z < 25 for z in slice_indices(20, 25))


def test_classifier_input_is_the_masked_particle_at_128_pixels():
    grey = np.full((40, 60), 90, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:50] = True
    grey[~mask] = 255  # bright surroundings must not leak in
    image = classifier_input(grey, mask)
    assert image.shape == (128, 128) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    with pytest.raises(FlawError, match="empty"):
        classifier_input(grey, np.zeros_like(mask))


def test_three_phase_map_separates_the_crack_from_the_solid():
    grey, labels, flaw = cracked_particles((32, 32, 32), 12, [True], seed=3)
    z = 16
    phases = three_phase(grey[z], labels[z] == 1)
    inside = labels[z] == 1
    assert (phases[~inside] == 0).all()
    assert ((phases == 1) == (flaw[z] & inside)).mean() > 0.97
    assert (phases[inside & ~flaw[z]] == 2).mean() > 0.95  # noise puts a few below
    assert (phases[inside & flaw[z]] == 1).all()


def test_flaw_volume_maps_only_the_flawed_particles():
    grey, labels, flaw = cracked_particles((24, 24, 48), 9, [True, True], seed=1)
    out = flaw_volume(grey, labels, {2})
    assert (out[labels == 0] == 0).all() and (out[labels == 1] == 2).all()
    for z in range(24):
        mask = labels[z] == 2
        np.testing.assert_array_equal(out[z][mask], three_phase(grey[z], mask)[mask])
    assert (out[flaw & (labels == 2)] == 1).mean() > 0.9


def _particle_set(n_particles: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    cracked = [i % 2 == 0 for i in range(n_particles)]
    grey, labels, _ = cracked_particles((28, 28, 28 * n_particles), 11, cracked, seed=seed)
    images, targets, _ = labelled_inputs(grey, labels, cracked)
    return images, targets


@pytest.mark.slow  # trains a network
def test_the_flaw_classifier_learns_cracked_from_intact_particles():
    train = _particle_set(8, seed=0)
    val = _particle_set(4, seed=1)
    config = FlawTrainConfig(epochs=12, patience=12, batch=16, widths=(8, 16, 32))
    result = train_classifier(train, val, config, torch.device("cpu"))
    assert result.val_accuracy >= 0.85  # chance is 0.5: half the particles are cracked
    again = load_classifier(save_classifier(result.net, config), torch.device("cpu"))
    np.testing.assert_allclose(
        slice_scores(again, val[0], torch.device("cpu")),
        slice_scores(result.net, val[0], torch.device("cpu")),
        rtol=1e-5,
    )
    with pytest.raises(FlawError, match="not a tomoloop flaw classifier"):
        load_classifier(_torch_bytes(), torch.device("cpu"))


def test_the_published_classifier_is_vgg16_wide_with_a_dense_head():
    """Daemi et al. 2022, §4: VGG16 filter counts, no batch norm, a dense layer, one output."""
    net = FlawTrainConfig(**SEED_FLAWS).build()
    convs = [m.out_channels for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert convs == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    dense = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(512 * 4 * 4, 256), (256, 1)]
    assert net(torch.rand(2, 1, 128, 128)).shape == (2,)


@pytest.mark.slow  # trains a network
def test_the_published_dense_head_learns_cracked_from_intact_particles_too():
    train = _particle_set(8, seed=0)
    val = _particle_set(4, seed=1)
    config = FlawTrainConfig(
        epochs=12, patience=12, batch=16, widths=(8, 16, 32), dense=32, batch_norm=False
    )
    assert train_classifier(train, val, config, torch.device("cpu")).val_accuracy >= 0.85


def _torch_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buffer)
    return buffer.getvalue()
