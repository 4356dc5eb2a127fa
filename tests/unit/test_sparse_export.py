"""Export of sparse labels: semantic masks write 255 where unlabelled; COCO instances lie
inside the labelled region and the unlabelled region is a crowd (ignore) region.
"""

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tomoloop.labels.masks import InstanceMasks
from tomoloop.labels.phases import IGNORE
from tomoloop.metrics.coco import instance_scores
from tomoloop.particles.instances import coco_from_slices, write_coco_folder
from tomoloop.training.data import LabelledSlice

NAMES = ["pore", "nmc", "cbd"]


def _sparse():
    """(32, 32): a disc of class 1 cut by the unlabelled right part, a square of class 2
    inside the labelled left part, and a disc of class 1 wholly in the unlabelled part.
    """
    labels = np.zeros((32, 32), np.uint8)
    cv2.circle(labels, (12, 8), 6, 1, -1)
    labels[20:26, 2:8] = 2
    cv2.circle(labels, (26, 24), 4, 1, -1)
    labels[:, 14:] = IGNORE
    return labels


def _decoded(annotation):
    segmentation = annotation["segmentation"]
    rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def test_instances_lie_in_the_labelled_region_and_the_rest_is_one_crowd_per_category():
    labels = _sparse()
    document = coco_from_slices([labels], ["z.png"], NAMES, [1, 2])
    plain = [a for a in document["annotations"] if not a["iscrowd"]]
    crowd = [a for a in document["annotations"] if a["iscrowd"]]
    assert sorted(a["category_id"] for a in plain) == [1, 2]  # the unlabelled disc is gone
    for a in plain:
        assert not (_decoded(a) & (labels == IGNORE)).any()
    assert sorted(a["category_id"] for a in crowd) == [1, 2]
    for a in crowd:
        np.testing.assert_array_equal(_decoded(a), labels == IGNORE)
        assert a["area"] == int((labels == IGNORE).sum())
        assert a["bbox"] == [14.0, 0.0, 18.0, 32.0]


def test_a_fully_labelled_slice_has_no_crowd_region():
    labels = _sparse()
    labels[labels == IGNORE] = 0
    document = coco_from_slices([labels], ["z.png"], NAMES, [1, 2])
    assert all(a["iscrowd"] == 0 for a in document["annotations"])


def test_drawn_particles_are_clipped_to_the_labelled_region():
    labels = _sparse()
    inside = np.zeros((32, 32), bool)
    inside[2:6, 2:6] = True
    across = np.zeros((32, 32), bool)
    across[10:14, 10:20] = True
    outside = np.zeros((32, 32), bool)
    outside[28:31, 20:30] = True
    drawn = InstanceMasks(np.stack([inside, across, outside]), np.array([1, 1, 1]), (1,))
    document = coco_from_slices([labels], ["z.png"], NAMES, [1], drawn=[drawn])
    plain = [a for a in document["annotations"] if not a["iscrowd"]]
    assert [a["area"] for a in plain] == [16, 16]  # across keeps its 4 × 4 labelled part
    np.testing.assert_array_equal(_decoded(plain[1]), across & (labels != IGNORE))


def test_detections_in_the_unlabelled_region_are_ignored_by_coco_evaluation():
    document = coco_from_slices([_sparse()], ["z.png"], NAMES, [1, 2])
    truth = [{**a, "score": 1.0} for a in document["annotations"] if not a["iscrowd"]]
    unlabelled_disc = np.zeros((32, 32), np.uint8)
    cv2.circle(unlabelled_disc, (26, 24), 4, 1, -1)
    rle = mask_utils.encode(np.asfortranarray(unlabelled_disc))
    extra = {
        "image_id": 1,
        "category_id": 1,
        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
        "bbox": mask_utils.toBbox(rle).tolist(),
        "score": 1.0,
    }
    assert instance_scores(document, [*truth, extra])["segm_AP"] == pytest.approx(1.0)
    without_crowd = {
        **document,
        "annotations": [a for a in document["annotations"] if not a["iscrowd"]],
    }
    assert instance_scores(without_crowd, [*truth, extra])["segm_AP"] < 1.0


def test_the_coco_folder_writes_semantic_masks_with_255_where_unlabelled(tmp_path):
    labels = _sparse()
    slices = {"train": [LabelledSlice(np.zeros((32, 32), np.float32), labels)]}
    files = write_coco_folder(slices, NAMES, (1, 2), tmp_path / "coco")
    (image,) = json.loads(files["train"].read_text())["images"]
    written = cv2.imread(str(tmp_path / "coco" / image["mask_file"]), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint8
    np.testing.assert_array_equal(written, labels)
    assert (written == 255).sum() == (labels == IGNORE).sum() > 0
