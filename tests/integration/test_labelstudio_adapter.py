"""The Label Studio adapter against the real server of the test session."""

import uuid

import httpx
import numpy as np
import pytest
from PIL import Image

from tomoloop.adapters.labelstudio import LabelStudioClient, LabelStudioUnavailable
from tomoloop.labels.studio_json import (
    TaskSpec,
    brush_results,
    labeling_config,
    mask_from_results,
    queue_score,
)

pytestmark = pytest.mark.integration
NAMES = ("pore", "nmc", "cbd")
CONFIG = labeling_config(NAMES, context=0)


@pytest.fixture
def client(label_studio):
    url, token = label_studio.credentials()
    return LabelStudioClient(url, token)


def _slices(label_studio, n=3):
    """n small PNG slices under the server's local-files root, and their class masks."""
    folder = label_studio.files_root / "media" / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    masks = []
    for i in range(n):
        mask = rng.integers(0, 3, (24, 32)).astype(np.uint8)
        Image.fromarray((mask * 100).astype(np.uint8)).save(folder / f"z{i}.png")
        masks.append(mask)
    return folder, masks


def _task(label_studio, folder, i, mask):
    relative = (folder / f"z{i}.png").relative_to(label_studio.files_root)
    return TaskSpec(
        key=f"vol:z:{i}:r1",
        images={"image": f"/data/local-files/?d={relative}"},
        meta={"volume": "vol", "axis": "z", "index": i, "round": 1, "score": 0.5 + i},
        prediction=brush_results(mask, NAMES),
        model_version="model-7",
        score=0.5 + i,
    )


def test_push_is_idempotent_and_annotations_come_back_pixel_exact(label_studio, client):
    title = f"tomoloop {uuid.uuid4().hex[:6]}"
    project = client.ensure_project(title, CONFIG)
    assert client.ensure_project(title, CONFIG) == project  # reused, not duplicated
    folder, masks = _slices(label_studio)
    client.allow_local_files(project, str(folder))
    client.allow_local_files(project, str(folder))

    first = client.push(project, [_task(label_studio, folder, i, masks[i]) for i in range(2)])
    again = client.push(project, [_task(label_studio, folder, i, masks[i]) for i in range(3)])
    assert len(first) == 2 and len(again) == 3 and again["vol:z:0:r1"] == first["vol:z:0:r1"]
    assert len(client.task_ids(project)) == 3

    task = client.sdk.tasks.get(id=first["vol:z:1:r1"])
    (prediction,) = client.sdk.predictions.list(task=task.id)
    assert prediction.model_version == "model-7"
    assert prediction.score == pytest.approx(queue_score(1.5))  # lower = served first
    assert client.sdk.projects.get(id=project).model_version == "model-7"
    np.testing.assert_array_equal(mask_from_results(prediction.result, (24, 32), NAMES), masks[1])

    url, token = label_studio.credentials()
    image = httpx.get(url + task.data["image"], headers={"Authorization": f"Token {token}"})
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"

    corrected = masks[1].copy()
    corrected[:5] = 2  # the annotator paints binder over the top rows
    client.sdk.annotations.create(
        id=task.id, result=brush_results(corrected, NAMES), lead_time=12.5
    )
    client.sdk.annotations.create(id=first["vol:z:0:r1"], result=[], was_cancelled=True)
    pulled = {p.task_key: p for p in client.pull(project)}
    assert set(pulled) == {"vol:z:0:r1", "vol:z:1:r1"}
    assert pulled["vol:z:0:r1"].was_cancelled
    back = pulled["vol:z:1:r1"]
    assert back.lead_time_s == pytest.approx(12.5) and not back.was_cancelled
    np.testing.assert_array_equal(mask_from_results(back.result, (24, 32), NAMES), corrected)


def test_an_unreachable_server_gives_a_clear_error_after_retries():
    client = LabelStudioClient("http://127.0.0.1:9", "token", retries=2, backoff_s=0.01)
    with pytest.raises(
        LabelStudioUnavailable, match=r"127\.0\.0\.1:9 failed to list projects after 3"
    ):
        client.ensure_project("x", CONFIG)


def test_a_push_cut_off_by_a_stopped_server_fails_clearly_and_a_rerun_completes(
    label_studio, client
):
    project = client.ensure_project(f"tomoloop {uuid.uuid4().hex[:6]}", CONFIG)
    folder, masks = _slices(label_studio, n=3)
    client.allow_local_files(project, str(folder))
    tasks = [_task(label_studio, folder, i, masks[i]) for i in range(3)]
    client.push(project, tasks[:1])  # the push got this far before the server stopped

    label_studio.down()
    impatient = LabelStudioClient(client.url, label_studio.credentials()[1], 1, 0.01)
    try:
        with pytest.raises(LabelStudioUnavailable, match="labelstudio status"):
            impatient.push(project, tasks)
    finally:
        label_studio.up()
    finished = client.push(project, tasks)
    assert len(finished) == 3 and len(client.task_ids(project)) == 3
