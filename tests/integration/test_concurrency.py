"""Several annotators and flows at once, on the multi-user backend (real PostgreSQL)."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tomoloop.adapters.labelstudio import LabelStudioClient
from tomoloop.db.models import Tier
from tomoloop.db.registry import Registry
from tomoloop.labels.masks import decode_class_mask
from tomoloop.labels.studio_json import brush_results

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
NAMES = ("pore", "nmc", "cbd")
SECRET = "s3cret-for-tests"


def test_two_syncs_and_a_webhook_burst_store_every_annotation_once(
    tmp_path,
    monkeypatch,
    label_studio,
    label_studio_postgres,
    electrode_volume,
    ingest_electrode,
    serve_http,
):
    from tomoloop.adapters.labelstudio_registry import project_title, review_title
    from tomoloop.flows.labelstudio import push_round, sync_annotations

    monkeypatch.setenv("TOMOLOOP_REVIEW_QA_RATE", "1")  # every label is also sent to review

    name = f"nmc-{uuid.uuid4().hex[:8]}"
    volume = ingest_electrode(tmp_path, electrode_volume, name=name)["volume_id"]
    registry = Registry.from_url(label_studio_postgres)
    client = LabelStudioClient(*label_studio.credentials())
    indices = [1, 4, 7, 10, 13, 16]
    slices = registry.register_slices(volume, "z", indices)
    round_id = registry.open_round(name, "random", None, [(slices[i], 1.0) for i in indices])
    project = push_round(round_id)["project"]
    corrected = {}
    for item in registry.round_items(round_id):
        index = next(i for i in indices if slices[i] == item.slice_id)
        corrected[item.slice_id] = (electrode_volume[index] + index) % 3
        client.sdk.annotations.create(
            id=item.ls_task_id, result=brush_results(corrected[item.slice_id], NAMES)
        )
    bodies = [
        {
            "action": "ANNOTATION_CREATED",
            "annotation": annotation,
            "task": {"id": task.id, "data": task.data},
            "project": {"id": project, "title": project_title(name)},
        }
        for task in client.sdk.tasks.list(project=project, fields="all")
        for annotation in task.annotations
    ]
    assert len(bodies) == len(indices)
    url = f"{serve_http(webhook_secret=SECRET)}/webhooks/labelstudio"

    def deliver(body: dict) -> str:
        answer = httpx.post(url, json=body, headers={"X-Tomoloop-Secret": SECRET}, timeout=60)
        answer.raise_for_status()
        return answer.json()["status"]

    with ThreadPoolExecutor(12) as pool:
        syncs = [pool.submit(sync_annotations, name) for _ in range(2)]
        webhooks = list(pool.map(deliver, bodies * 3))  # Label Studio retries deliveries
        polled = [s.result() for s in syncs]

    stored = webhooks.count("stored") + sum(p["stored"] for p in polled)
    assert stored == len(indices) and set(webhooks) <= {"stored", "seen"}
    events = registry.ls_events()
    assert len(events) == len(indices) and {e.status for e in events} == {"stored"}
    assert registry.label_counts(volume)["annotator"] == len(indices)
    best = {a.slice_id: a for a in registry.best_annotations(volume)}
    for slice_id, mask in corrected.items():
        assert best[slice_id].tier == Tier.ANNOTATOR
        np.testing.assert_array_equal(decode_class_mask(best[slice_id].mask_rle), mask)
    assert registry.close_round(round_id) == {"pending": 0, "annotated": 6, "skipped": 0}

    sync_annotations(name)  # pushes what the webhooks queued after the racing syncs claimed
    reviews = registry.reviews(name)
    assert len(reviews) == len(indices) and {r.state for r in reviews} == {"pending"}
    titles = [p.title for p in client.sdk.projects.list()]
    assert titles.count(review_title(name)) == 1  # one review project, each review once
    tasks = client.task_ids(client.find_project(review_title(name)))
    assert sorted(tasks.values()) == sorted(r.ls_task_id for r in reviews)
