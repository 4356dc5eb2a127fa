"""Datasets of many volumes: a slice nobody labelled yet, and scores per volume and pooled
(every slice predicted once; a volume's scores are those of its slices alone)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tomoloop.db.entities import Volume
from tomoloop.labels.masks import (
    decode_class_mask,
    encode_class_mask,
    labelled_pixels,
    merge_by_tier,
    unlabelled_mask,
)
from tomoloop.labels.phases import IGNORE
from tomoloop.labels.tiers import Tier
from tomoloop.services.training import SplitScores, evaluation_metrics
from tomoloop.training.data import LabelledSlice
from tomoloop.training.evaluation import evaluate, evaluate_groups

CLASSES = ("pore", "solid")


class Threshold(torch.nn.Module):
    """Predicts class 1 where the grey value is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 10


def _slice(seed: int, wrong: int, unlabelled_rows: int = 0) -> LabelledSlice:
    """A (16, 16) slice whose labels disagree with the threshold on ``wrong`` pixels and
    leave the first ``unlabelled_rows`` rows unlabelled."""
    rng = np.random.default_rng(seed)
    image = rng.random((16, 16)).astype(np.float32)
    labels = (image > 0.5).astype(np.uint8)
    flat = labels.reshape(-1)
    flat[:wrong] = 1 - flat[:wrong]
    labels[:unlabelled_rows] = IGNORE
    return LabelledSlice(image, labels)


def _volume(volume_id: int, name: str) -> Volume:
    return Volume(volume_id, name, f"/{name}.tif", name * 8, 4, 16, 16, "uint8", None, None,
                  None, "xct", "", "pore=0,solid=1", datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip


def _comparable(result) -> dict:
    """An evaluation's numbers, without the wall-clock time per patch."""
    out = result.as_dict(CLASSES)
    out.pop("seconds_per_patch")
    return out


def test_a_group_scores_as_its_slices_alone_and_the_pool_as_all_of_them():
    a = [_slice(0, 10), _slice(1, 40, unlabelled_rows=4)]
    b = [_slice(2, 3), _slice(3, 90), _slice(4, 0, unlabelled_rows=16)]
    slices, groups = [a[0], b[0], a[1], b[1], b[2]], ["a", "b", "a", "b", "b"]
    pooled, by_group = evaluate_groups(Threshold(), slices, groups, 2, tile=16, overlap=0)
    assert set(by_group) == {"a", "b"}
    assert _comparable(pooled) == _comparable(evaluate(Threshold(), slices, 2, 16, 0))
    for name, part in (("a", a), ("b", b)):
        alone = evaluate(Threshold(), part, 2, tile=16, overlap=0)
        np.testing.assert_array_equal(by_group[name].confusion, alone.confusion)
        assert _comparable(by_group[name]) == _comparable(alone)
    np.testing.assert_array_equal(
        pooled.confusion, by_group["a"].confusion + by_group["b"].confusion
    )
    assert by_group["a"].scores.pixel_accuracy != by_group["b"].scores.pixel_accuracy
    with pytest.raises(ValueError, match="2 group names for 5 slices"):
        evaluate_groups(Threshold(), slices, ["a", "b"], 2, tile=16, overlap=0)


def _split_scores(volumes: dict[Volume, list[LabelledSlice] | None]) -> SplitScores:
    labelled = [(v.name, s) for v, part in volumes.items() for s in part or ()]
    pooled, by_name = evaluate_groups(
        Threshold(), [s for _, s in labelled], [n for n, _ in labelled], 2, tile=16, overlap=0
    )
    return SplitScores("test", len(labelled), pooled, {v: by_name.get(v.name) for v in volumes})


def test_one_volume_records_the_metric_rows_of_before_and_two_add_rows_per_scored_volume():
    first, second = _volume(3, "scan-1"), _volume(7, "scan-2")
    one = _split_scores({first: [_slice(0, 10), _slice(1, 5)]})
    assert one.metrics(CLASSES, 11) == evaluation_metrics(one.pooled, CLASSES, "test", 11)

    two = _split_scores({first: [_slice(0, 10)], second: None})  # nobody labelled scan-2
    rows = two.metrics(CLASSES, 11)
    pooled_rows = evaluation_metrics(two.pooled, CLASSES, "test", 11)
    assert rows[: len(pooled_rows)] == pooled_rows
    own = rows[len(pooled_rows) :]
    assert own and {m.name.split("/")[0] for m in own} == {"volume:3"}
    assert [asdict(m) | {"name": m.name.removeprefix("volume:3/")} for m in own] == [
        asdict(m) for m in pooled_rows
    ]  # scan-1 is every labelled slice: its own numbers are the pooled ones

    shown = two.as_dict(CLASSES)
    assert shown["mIoU"] == two.pooled.scores.miou
    assert shown["volumes"]["scan-2"] == {
        "scored": False,
        "labelled_px": 0,
        "reason": "nobody labelled its test slices yet",
    }
    assert shown["volumes"]["scan-1"]["scored"] is True
    assert shown["volumes"]["scan-1"]["labelled_px"] == 16 * 16
    assert shown["volumes"]["scan-1"]["mIoU"] == shown["mIoU"]


@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_an_unlabelled_slice_labels_nothing_and_yields_to_any_label(h, w, seed):
    empty = unlabelled_mask(h, w)
    decoded = decode_class_mask(empty)
    assert decoded.shape == (h, w) and (decoded == IGNORE).all()
    assert labelled_pixels(empty) == 0
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, (h, w)).astype(np.uint8)
    label[rng.random((h, w)) < 0.3] = IGNORE
    merged = merge_by_tier([(Tier.AUTO, decoded), (Tier.ANNOTATOR, label)])
    np.testing.assert_array_equal(merged, label)
    assert encode_class_mask(decoded) == empty
