"""Sparse labels through the registry into training slices, on both backends."""

import json

import numpy as np
import pytest
import tifffile

from tomoloop.adapters.artifacts import ArtifactStore
from tomoloop.db.models import Tier
from tomoloop.db.registry import NewAnnotation, Registry
from tomoloop.labels.masks import encode_class_mask, labelled_pixels
from tomoloop.labels.phases import IGNORE
from tomoloop.services import Services, dataset_slices

pytestmark = pytest.mark.integration


def test_a_sparse_label_trains_merged_over_the_lower_tiers_and_a_dense_one_unchanged(
    tmp_path, registry_url
):
    tifffile.imwrite(
        tmp_path / "gray.tif",
        np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8),
        photometric="minisblack",
    )
    registry = Registry.from_url(registry_url)
    services = Services(registry, ArtifactStore(str(tmp_path / "store")))
    volume = registry.register_volume(
        "v", str(tmp_path / "gray.tif"), "a" * 64, (4, 8, 8), "uint8", "pore=0,nmc=1,cbd=2", None
    )
    slices = registry.register_slices(volume, "z", [0, 1, 2])
    auto = np.zeros((8, 8), np.uint8)
    auto[:, 4:] = 2
    stored = encode_class_mask(auto)
    as_file = services.store.put_bytes(json.dumps(stored).encode(), ".json")
    region = np.full((8, 8), IGNORE, np.uint8)
    region[2:4, 2:6] = 1  # the annotator painted a 2 × 4 region only
    older_region = np.full((8, 8), IGNORE, np.uint8)
    older_region[6:] = 1  # an earlier version of that label: superseded, never merged
    dense = np.ones((8, 8), np.uint8)
    registry.add_annotations(
        [
            NewAnnotation(
                slices[0],
                Tier.AUTO,
                "auto:x",
                as_file.key,
                as_file.sha256,
                labelled_px=labelled_pixels(stored),
            ),
            NewAnnotation(slices[1], Tier.AUTO, "auto:x", mask_rle=stored),
            NewAnnotation(
                slices[0], Tier.ANNOTATOR, "ls:1@1", mask_rle=encode_class_mask(older_region)
            ),
            NewAnnotation(slices[0], Tier.ANNOTATOR, "ls:1@2", mask_rle=encode_class_mask(region)),
            NewAnnotation(slices[1], Tier.ANNOTATOR, "ls:2", mask_rle=encode_class_mask(dense)),
            NewAnnotation(slices[2], Tier.ANNOTATOR, "ls:3", mask_rle=encode_class_mask(region)),
        ]
    )
    best = {a.slice_id: a.id for a in registry.best_annotations()}
    data = registry.freeze_dataset("nmc", {"train": [best[slices[i]] for i in range(3)]})
    later = np.full((8, 8), 0, np.uint8)  # an auto label made after: the version keeps its merge
    registry.add_annotations(
        [NewAnnotation(slices[0], Tier.AUTO, "auto:y", mask_rle=encode_class_mask(later))]
    )

    loaded = {s.annotation_id: s for s in dataset_slices(services, data)["train"]}
    train = {k: s.labels for k, s in loaded.items()}
    expected = auto.copy()
    expected[2:4, 2:6] = 1  # the annotator's classes in the region, the auto label elsewhere
    np.testing.assert_array_equal(train[best[slices[0]]], expected)
    np.testing.assert_array_equal(train[best[slices[1]]], dense)  # a dense top label: as is
    np.testing.assert_array_equal(train[best[slices[2]]], region)  # nothing beneath: sparse
    # each pixel weighs as the tier it came from: the annotator's region 2, the auto rest 1
    weights = np.ones((8, 8), np.float32)
    weights[2:4, 2:6] = 2.0
    np.testing.assert_array_equal(loaded[best[slices[0]]].weight, weights)
    assert loaded[best[slices[1]]].weight == 2.0  # one tier: one weight for the slice
    assert registry.dataset_labelled_px(data.id) == {"train": 8 + 64 + 8}
    services.close()
