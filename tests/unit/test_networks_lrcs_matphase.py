import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from tomoloop.networks.losses import cross_entropy
from tomoloop.networks.lrcsnet import LRCSNet
from tomoloop.networks.matphase import (
    LCGAR,
    MatPhase,
    curriculum_mask,
    remove_rows_and_resize,
    smooth_labels_knn,
)
from tomoloop.training.trainer import compute_loss

PORE, CARBON, NICKEL = 0, 1, 2
EXCLUSIVE = [(CARBON, NICKEL)]


def _tiny_lrcs(**options):
    return LRCSNet(1, 3, base=4, **options)


def _tiny_matphase(**options):
    return MatPhase(1, 3, base=4, **options)


@pytest.mark.parametrize("build", [_tiny_lrcs, _tiny_matphase])
def test_forward_gives_logits_per_pixel_and_the_training_loss_reaches_every_weight(build):
    model = build()
    images, target = torch.rand(2, 1, 32, 48), torch.randint(0, 3, (2, 32, 48))
    assert model(images).shape == (2, 3, 32, 48)
    compute_loss(model, images, target, torch.rand(2, 32, 48), cross_entropy, 0.3).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("build", [_tiny_lrcs, _tiny_matphase])
def test_sides_not_divisible_by_16_are_refused(build):
    with pytest.raises(ValueError, match="divisible by 16"):
        build()(torch.zeros(1, 1, 40, 48))


@pytest.mark.parametrize("build", [_tiny_lrcs, _tiny_matphase])
def test_dropout_stays_available_for_mc_dropout(build):
    assert any(isinstance(m, nn.Dropout | nn.Dropout2d) for m in build().modules())


def _convs(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


def test_lrcsnet_is_asymmetric_as_published_a_thin_encoder_and_a_deeper_decoder():
    model = LRCSNet(1, 3)
    assert _convs(model.encoder) + _convs(model.bottleneck) == 4  # SegmentPy docs: conv1–4
    assert _convs(model.decoder) == 8  # conv5a … conv8b, then the logits convolution
    assert _convs(model.encoder) < _convs(model.decoder)


def test_lrcsnet_depths_are_options_either_side_may_be_the_deeper():
    model = LRCSNet(1, 3, encoder_convs=3, decoder_convs=1)
    assert _convs(model.encoder) == 9 and _convs(model.decoder) == 4
    assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("padding", ["neighbours", "zero"])
@pytest.mark.parametrize("patch", [4, 8, 12])
def test_dense_lcgar_equals_table_i_on_a_cut_out_patch(patch, padding):
    torch.manual_seed(0)
    lcgar = LCGAR(in_channels=1, n_classes=3, patch=patch, padding=padding).eval()
    norm = next(m for m in lcgar.modules() if isinstance(m, nn.BatchNorm1d))
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2.0)
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    ugsm_logits = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        dense = lcgar(images, ugsm_logits)
        before = patch // 2 + lcgar.context
        after = lcgar.window - 1 - before
        padded = torch.nn.functional.pad(images, (before, after, before, after), mode="reflect")
        for y, x in [(0, 0), (5, 17), (16, 16), (31, 30)]:
            window = padded[:, :, y : y + lcgar.window, x : x + lcgar.window]
            side = patch + 12 if padding == "neighbours" else patch
            assert window.shape[-2:] == (side, side)
            single = lcgar.classify_patches(window, ugsm_logits[:, :, y, x])
            torch.testing.assert_close(single, dense[:, :, y, x], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padding", ["neighbours", "zero"])
def test_lcgar_rows_are_the_dense_features_of_the_chosen_pixels(padding):
    torch.manual_seed(0)
    lcgar = LCGAR(in_channels=1, n_classes=3, patch=8, padding=padding)
    images, logits = torch.rand(2, 1, 16, 16) * 2 - 1, torch.randn(2, 3, 16, 16)
    chosen = torch.tensor([0, 17, 255, 256, 511])
    dense = lcgar.features(images, logits).permute(0, 2, 3, 1).reshape(-1, 8 * 4 + 3)
    torch.testing.assert_close(lcgar.rows(images, logits, chosen), dense[chosen])


def test_zero_padded_lcgar_reads_only_its_window_and_the_default_reads_the_ring_around_it():
    torch.manual_seed(0)
    images, logits = torch.rand(1, 1, 32, 32) * 2 - 1, torch.randn(1, 3, 32, 32)
    changed = images.clone()
    changed[:, :, 16 - 4 - 3, :] = 0.5  # 3 rows above pixel (16, 16)'s 8² window
    inside = images.clone()
    inside[:, :, 16 - 4, :] = 0.5  # the window's first row
    for padding, moves in (("zero", False), ("neighbours", True)):
        lcgar = LCGAR(in_channels=1, n_classes=3, patch=8, padding=padding).eval()
        with torch.no_grad():
            before, after = lcgar(images, logits), lcgar(changed, logits)
            within = lcgar(inside, logits)
        assert bool((before[..., 16, 16] != after[..., 16, 16]).any()) is moves, padding
        assert bool((before[..., 16, 16] != within[..., 16, 16]).any()), padding


def test_zero_padded_matphase_trains_its_lcgar_on_the_chosen_pixels_windows():
    torch.manual_seed(0)
    model = _tiny_matphase(lcgar_pixels=64, lcgar_padding="zero")
    images, target = torch.rand(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    model.training_loss(images, target, None, cross_entropy, 1.0).backward()
    grads = [p.grad for p in model.lcgar.conv1.parameters()]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert model(images).shape == (2, 3, 16, 16)


def test_lcgar_padding_must_be_known():
    with pytest.raises(ValueError, match="neighbours, zero"):
        LCGAR(padding="same")


def test_lcgar_patch_must_be_a_multiple_of_4():
    with pytest.raises(ValueError, match="multiple of 4"):
        LCGAR(patch=6)


def test_curriculum_admits_the_easiest_half_first_then_everything():
    difficulty = torch.arange(100, dtype=torch.float32).reshape(4, 25)
    assert curriculum_mask(difficulty, 0.0).sum() == 50
    assert curriculum_mask(difficulty, 0.0)[difficulty < 50].all()
    assert curriculum_mask(difficulty, 0.25).sum() == 75
    assert curriculum_mask(difficulty, 0.5).all() and curriculum_mask(difficulty, 0.9).all()
    assert curriculum_mask(difficulty, 0.0, start=0.2, ramp=0.8).sum() == 20
    assert curriculum_mask(difficulty, 0.3, ramp=0.0).all()


@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3),
        elements=st.floats(0, 1, width=32),
        fill=st.nothing(),
    ),
    st.floats(0, 1),
)
@settings(max_examples=50, deadline=None)
def test_curriculum_mask_is_monotone_in_progress_and_never_empty(difficulty, progress):
    difficulty = torch.from_numpy(difficulty)
    early = curriculum_mask(difficulty, progress / 2)
    late = curriculum_mask(difficulty, progress)
    assert early.shape == difficulty.shape and late.any()
    assert (late | ~early).all()  # whatever was admitted stays admitted
    if not early.all():
        assert difficulty[early].max() < difficulty[~early].min()  # the easiest come first


@pytest.mark.parametrize(
    ("progress", "lcgar_pixels", "lcgar_seen"),
    [(0.0, None, 256), (1.0, None, 512), (1.0, 100, 100)],
)
def test_matphase_trains_the_ugsm_on_all_pixels_and_lcgar_on_admitted_ones(
    progress, lcgar_pixels, lcgar_seen
):
    torch.manual_seed(0)
    model = _tiny_matphase(lcgar_pixels=lcgar_pixels)
    images, target = torch.rand(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    seen = []

    def spy(logits, labels, weight=None):
        seen.append(labels.numel())
        return cross_entropy(logits, labels, weight)

    value = model.training_loss(images, target, None, spy, progress)
    assert torch.isfinite(value)
    assert sorted(seen) == sorted([512, lcgar_seen])


@pytest.mark.parametrize(
    ("progress", "ugsm_grads", "lcgar_grads", "curriculum_progress"),
    [(0.5, True, False, None), (0.9, False, True, (0.9 * 115 - 100) / 15)],
)
def test_two_stage_schedule_trains_the_ugsm_then_only_the_lcgar(
    progress, ugsm_grads, lcgar_grads, curriculum_progress, monkeypatch
):
    torch.manual_seed(0)
    model = _tiny_matphase(schedule="two_stage", ugsm_share=100 / 115).train()
    images, target = torch.rand(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    stages = []
    admitted = model.admitted

    def recorded(ugsm_logits, labels, at, among=None):
        stages.append(at)
        return admitted(ugsm_logits, labels, at, among)

    monkeypatch.setattr(model, "admitted", recorded)
    before = model.ugsm.down[0][1].running_mean.clone()
    model.training_loss(images, target, None, cross_entropy, progress).backward()
    grads = {
        part: any(p.grad is not None for p in getattr(model, part).parameters())
        for part in ("ugsm", "lcgar")
    }
    assert grads == {"ugsm": ugsm_grads, "lcgar": lcgar_grads}
    assert stages == ([] if curriculum_progress is None else [pytest.approx(curriculum_progress)])
    # the fixed UGSM of the second stage keeps its batch-norm statistics
    assert torch.equal(model.ugsm.down[0][1].running_mean, before) == lcgar_grads
    assert model.ugsm.training


def test_unknown_matphase_schedules_are_refused():
    with pytest.raises(ValueError, match="joint, two_stage"):
        MatPhase(1, 3, schedule="staged")
    with pytest.raises(ValueError, match="ugsm_share 1"):
        MatPhase(1, 3, schedule="two_stage", ugsm_share=1)


@pytest.mark.slow  # trains a network
def test_lrcsnet_overfits_a_tiny_batch(overfit):
    assert overfit(lambda: LRCSNet(1, 3, base=16)) > 0.95


@pytest.mark.slow  # trains a network
def test_matphase_overfits_a_tiny_batch(overfit):
    assert overfit(lambda: MatPhase(1, 3, base=4), steps=100) > 0.95


_SLICES = hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=12)


@st.composite
def _slice_with_labels(draw, classes=4):
    shape = draw(_SLICES)
    image = draw(
        hnp.arrays(np.float32, shape, elements=st.floats(0, 1, width=32), fill=st.nothing())
    )
    labels = draw(
        hnp.arrays(np.uint8, shape, elements=st.integers(0, classes - 1), fill=st.nothing())
    )
    return image, labels


@given(_slice_with_labels(), st.integers(1, 10))
@settings(max_examples=60, deadline=None)
def test_row_removal_keeps_shapes_dtypes_value_range_and_label_set(pair, k):
    image, labels = pair
    if k >= image.shape[0]:
        with pytest.raises(ValueError, match="k="):
            remove_rows_and_resize(image, labels, k)
        return
    versions = remove_rows_and_resize(image, labels, k)
    assert len(versions) == k
    for removed, (new_image, new_labels) in enumerate(versions, start=1):
        assert new_image.shape == new_labels.shape == image.shape
        assert new_image.dtype == image.dtype and new_labels.dtype == labels.dtype
        kept_image, kept_labels = image[removed:], labels[removed:]
        assert new_image.min() >= kept_image.min() - 1e-6
        assert new_image.max() <= kept_image.max() + 1e-6
        assert set(np.unique(new_labels)) <= set(np.unique(kept_labels))
        np.testing.assert_array_equal(new_labels[-1], labels[-1])  # the bottom row stays


def test_row_removal_stretches_the_remaining_rows_back():
    image = np.repeat(np.arange(10, dtype=np.float32)[:, None], 3, axis=1)
    labels = (image >= 5).astype(np.uint8)
    (first_image, first_labels), *_ = remove_rows_and_resize(image, labels, k=2)
    assert first_image[0, 0] == pytest.approx(1.0) and first_image[-1, 0] == pytest.approx(9.0)
    assert np.all(np.diff(first_image[:, 0]) > 0)
    assert first_labels[:, 0].tolist() == sorted(first_labels[:, 0].tolist())


@given(_slice_with_labels(classes=3))
@settings(max_examples=60, deadline=None)
def test_smoothing_keeps_shape_dtype_label_set_and_leaves_other_classes(pair):
    _, labels = pair
    smoothed = smooth_labels_knn(labels, EXCLUSIVE)
    assert smoothed.shape == labels.shape and smoothed.dtype == labels.dtype
    assert set(np.unique(smoothed)) <= set(np.unique(labels))
    pore = labels == PORE
    np.testing.assert_array_equal(smoothed == PORE, pore)  # pore is in no pair
    changed = smoothed != labels
    assert np.all(smoothed[changed] + labels[changed] == CARBON + NICKEL)  # C ↔ Ni only


@given(_slice_with_labels(classes=2))
@settings(max_examples=60, deadline=None)
def test_smoothing_changes_nothing_where_no_rule_applies(pair):
    _, labels = pair  # pore and carbon only: Ni never appears, so no pixel can flip
    smoothed = smooth_labels_knn(labels, EXCLUSIVE)
    np.testing.assert_array_equal(smoothed, labels)
    np.testing.assert_array_equal(smooth_labels_knn(smoothed, EXCLUSIVE), smoothed)


@given(st.integers(2, 12), st.integers(2, 12), st.data())
@settings(max_examples=60, deadline=None)
def test_a_lone_carbon_pixel_inside_nickel_becomes_nickel(height, width, data):
    labels = np.full((height, width), NICKEL, dtype=np.uint8)
    y, x = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
    labels[y, x] = CARBON
    assert np.all(smooth_labels_knn(labels, EXCLUSIVE) == NICKEL)


def test_smoothing_follows_the_majority_and_both_directions():
    labels = np.full((5, 5), CARBON, dtype=np.uint8)
    labels[2, 2] = NICKEL
    labels[0, :] = PORE
    smoothed = smooth_labels_knn(labels, EXCLUSIVE)
    assert smoothed[2, 2] == CARBON  # Ni among carbon becomes carbon
    np.testing.assert_array_equal(smoothed[0], labels[0])
    half = np.array([[NICKEL] * 3, [NICKEL, CARBON, PORE], [PORE] * 3], dtype=np.uint8)
    assert smooth_labels_knn(half, EXCLUSIVE)[1, 1] == CARBON  # 4 of 8 is no majority
    with pytest.raises(ValueError, match="two different classes"):
        smooth_labels_knn(labels, [(CARBON, CARBON)])
