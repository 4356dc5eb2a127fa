"""Which slice a Label Studio task names, for the ML backend (no servers)."""

from datetime import datetime

import pytest

from tomoloop.db.entities import Volume
from tomoloop.services.mlbackend import TaskNotPredictable, backend_url, task_slice


def _volume(name: str) -> Volume:
    """A registered (20, 40, 48) volume."""
    return Volume(
        id=1, name=name, path="/data/v.tif", sha256="ab" * 32, shape_z=20, shape_y=40,
        shape_x=48, dtype="uint8", voxel_z_um=None, voxel_y_um=None, voxel_x_um=None,
        modality="xct", material="", phases="pore=0,nmc=1,cbd=2", created_at=datetime.now(),
    )  # fmt: skip


VOLUMES = [_volume("nmc-gray"), _volume("other")]


def test_a_task_names_its_slice_as_a_push_writes_it():
    found = task_slice(VOLUMES, {"volume": "nmc-gray", "axis": "y", "index": "39", "key": "k"})
    assert (found.volume.name, found.axis, found.index) == ("nmc-gray", "y", 39)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"image": "/x.png"}, "lack volume, axis, index: give volume, axis and index"),
        ({"volume": "elsewhere", "axis": "z", "index": 1}, "'elsewhere' is not one of the"),
        ({"volume": "other", "axis": "w", "index": 1}, "axis 'w' is not one of z, y, x"),
        ({"volume": "other", "axis": "z", "index": "one"}, "malformed"),
        ({"volume": "other", "axis": "z", "index": 20}, "index 20 is outside volume 'other'"),
        ({"volume": "other", "axis": "x", "index": -1}, "48 slices along x"),
    ],
)
def test_a_task_that_names_no_slice_of_the_dataset_says_why(data, why):
    with pytest.raises(TaskNotPredictable, match=why):
        task_slice(VOLUMES, data)


def test_the_backend_of_a_dataset_lives_under_its_quoted_name():
    assert backend_url("http://h:8700/", "nmc demo") == "http://h:8700/ml/nmc%20demo"
