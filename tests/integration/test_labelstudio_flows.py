"""Push a round to the real Label Studio and sync annotations back into the registry."""

import json
import os
import uuid

import numpy as np
import pytest
from typer.testing import CliRunner

from tomoloop.adapters.labelstudio import LabelStudioClient
from tomoloop.cli import app
from tomoloop.db.models import Tier
from tomoloop.db.registry import Registry
from tomoloop.labels.masks import decode_class_mask
from tomoloop.labels.studio_json import brush_results, labeling_config, mask_from_results

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
]
NAMES = ("pore", "nmc", "cbd")


@pytest.fixture
def setup(tmp_path, label_studio, label_studio_env, electrode_volume, ingest_electrode):
    """A dataset ingested into the environment's fresh registry, pointed at the session's
    server: (registry, client, dataset name, volume id).
    """
    name = f"nmc-{uuid.uuid4().hex[:8]}"
    result = ingest_electrode(tmp_path, electrode_volume, name=name)
    registry = Registry.from_url(os.environ["TOMOLOOP_DATABASE_URL"])
    client = LabelStudioClient(*label_studio.credentials())
    return registry, client, name, result["volume_id"]


def _tiny_model(registry, name: str) -> int:
    """A registered 2-epoch U-Net of the dataset (a model whose predictions get pushed)."""
    from tomoloop.flows.train import train_semantic

    config = {"epochs": 2, "patch": 32, "batch": 4, "patches_per_epoch": 16, "overlap": 8}
    return train_semantic(
        registry.dataset(name).id, "unet", config=config, options={"base": 4, "depth": 2}
    )["model_version"]


def test_a_round_goes_out_with_predictions_and_corrections_come_back(setup, electrode_volume):
    from tomoloop.adapters.labelstudio_registry import project_title
    from tomoloop.flows.labelstudio import push_round, sync_annotations

    registry, client, name, volume = setup
    model = _tiny_model(registry, name)
    slices = registry.register_slices(volume, "z", [3, 9, 14])
    round_id = registry.open_round(name, "entropy", model, [(slices[9], 0.9), (slices[3], 0.5)])

    pushed = push_round(round_id)
    assert pushed["tasks"] == 2
    repushed = CliRunner().invoke(app, ["push", "--round", str(round_id), "--json"])
    assert json.loads(repushed.stdout)["tasks"] == 2  # re-push: nothing duplicated
    project = client.ensure_project(project_title(name), labeling_config(NAMES))
    assert project == pushed["project"] and len(client.task_ids(project)) == 2
    items = {i.slice_id: i for i in registry.round_items(round_id)}
    task_9, task_3 = items[slices[9]].ls_task_id, items[slices[3]].ls_task_id
    task = client.sdk.tasks.get(id=task_9)
    assert {"image", "before_1", "after_1"} <= set(task.data) and task.data["index"] == 9
    (prediction,) = client.sdk.predictions.list(task=task_9)
    predicted = mask_from_results(prediction.result, (40, 48), NAMES)
    assert predicted.shape == (40, 48) and prediction.model_version == str(model)

    corrected = electrode_volume[9].copy()
    corrected[:4, :4] = 2
    client.sdk.annotations.create(id=task_9, result=brush_results(corrected, NAMES), lead_time=31)
    client.sdk.annotations.create(id=task_3, result=[], was_cancelled=True)
    bad = brush_results(corrected, NAMES)
    bad[0]["value"]["brushlabels"] = ["dust"]
    client.sdk.annotations.create(id=task_9, result=bad, lead_time=5)

    counts = sync_annotations(name)
    assert (counts["stored"], counts["skipped"], counts["rejected"]) == (1, 1, 1)
    best = {a.slice_id: a for a in registry.best_annotations(volume)}
    stored = best[slices[9]]
    assert stored.tier == Tier.ANNOTATOR and stored.lead_time_s == 31
    np.testing.assert_array_equal(decode_class_mask(stored.mask_rle), corrected)
    assert best[slices[3]].tier == Tier.AUTO  # skipped: the auto label still counts
    items = {i.slice_id: i for i in registry.round_items(round_id)}
    assert (items[slices[9]].state, items[slices[9]].annotation_seconds) == ("annotated", 31)
    assert items[slices[3]].state == "skipped"
    (rejected,) = registry.ls_events("rejected")
    assert "'dust'" in rejected.reason and rejected.ls_task_id == task_9

    again = CliRunner().invoke(app, ["pull", "--dataset", name, "--json"])
    assert (json.loads(again.stdout)["stored"], json.loads(again.stdout)["seen"]) == (0, 3)
    assert registry.label_counts(volume)["annotator"] == 1


def test_the_real_server_delivers_a_webhook_and_polling_then_finds_it_stored(
    setup, serve_http, electrode_volume
):
    import time

    import httpx

    from tomoloop.adapters.labelstudio_registry import project_title
    from tomoloop.flows.labelstudio import push_round, sync_annotations

    registry, client, name, volume = setup
    http_app = serve_http(webhook_secret="s3cret-for-tests")
    slices = registry.register_slices(volume, "z", [5])
    round_id = registry.open_round(name, "random", None, [(slices[5], 1.0)])
    project = push_round(round_id)["project"]
    assert project == client.ensure_project(project_title(name), labeling_config(NAMES))
    client.sdk.webhooks.create(
        url=f"{http_app}/webhooks/labelstudio",
        project=project,
        send_payload=True,
        send_for_all_actions=False,
        actions=["ANNOTATION_CREATED", "ANNOTATION_UPDATED"],
        headers={"X-Tomoloop-Secret": "s3cret-for-tests"},
    )
    (item,) = registry.round_items(round_id)
    corrected = electrode_volume[5].copy()
    corrected[-3:] = 1
    client.sdk.annotations.create(
        id=item.ls_task_id, result=brush_results(corrected, NAMES), lead_time=7
    )
    deadline = time.monotonic() + 30
    while not registry.ls_events("stored") and time.monotonic() < deadline:
        time.sleep(0.3)
    (event,) = registry.ls_events("stored")
    assert event.via == "webhook"
    best = {a.slice_id: a for a in registry.best_annotations(volume)}[slices[5]]
    np.testing.assert_array_equal(decode_class_mask(best.mask_rle), corrected)

    polled = sync_annotations(name)
    assert (polled["stored"], polled["seen"]) == (0, 1)  # one annotation, stored once

    wrong = httpx.post(f"{http_app}/webhooks/labelstudio", json={"action": "ANNOTATION_CREATED"})
    assert wrong.status_code == 401
    malformed = httpx.post(
        f"{http_app}/webhooks/labelstudio",
        json={"action": "ANNOTATION_CREATED", "annotation": {}},
        headers={"X-Tomoloop-Secret": "s3cret-for-tests"},
    )
    assert malformed.status_code == 422 and "expected annotation" in malformed.text
    models = httpx.get(f"{http_app}/datasets").json()
    assert models[0]["name"] == name
    assert httpx.get(f"{http_app}/models/999").status_code == 404


def test_label_studio_restarted_in_the_middle_of_a_round_and_the_round_completes(
    setup, label_studio, electrode_volume
):
    from tomoloop.adapters.labelstudio import LabelStudioUnavailable
    from tomoloop.flows.labelstudio import push_round, sync_annotations

    registry, client, name, volume = setup
    indices = [2, 6, 10, 14]
    slices = registry.register_slices(volume, "z", indices)
    round_id = registry.open_round(name, "random", None, [(slices[i], 1.0) for i in indices])
    push_round(round_id)
    items = registry.round_items(round_id)

    def annotate(item) -> None:
        index = next(i for i in indices if slices[i] == item.slice_id)
        client.sdk.annotations.create(
            id=item.ls_task_id, result=brush_results(electrode_volume[index], NAMES)
        )

    for item in items[:2]:
        annotate(item)
    first = sync_annotations(name)
    assert (first["stored"], first["closed_rounds"]) == (2, [])

    label_studio.down()
    try:
        with pytest.raises(LabelStudioUnavailable, match="labelstudio status"):
            sync_annotations(name)
    finally:
        label_studio.up()
    assert registry.label_counts(volume)["annotator"] == 2  # nothing lost, nothing half-done
    for item in items[2:]:
        annotate(item)
    last = sync_annotations(name)
    assert (last["stored"], last["seen"], last["closed_rounds"]) == (2, 2, [round_id])
    assert {i.state for i in registry.round_items(round_id)} == {"annotated"}


def test_labels_due_for_review_reach_a_second_person_and_come_back_as_tier_expert(
    setup, monkeypatch, tmp_path, electrode_volume
):
    from tomoloop.adapters.labelstudio_registry import review_title
    from tomoloop.flows.labelstudio import push_round, sync_annotations
    from tomoloop.flows.loop import oracle_reviews

    monkeypatch.setenv("TOMOLOOP_REVIEW_QA_RATE", "0")  # only disagreement routes here
    registry, client, name, volume = setup
    model = _tiny_model(registry, name)
    slices = registry.register_slices(volume, "z", [4, 8, 12])
    chosen = [(slices[i], 0.5) for i in (4, 8, 12)]
    round_id = registry.open_round(name, "entropy", model, chosen)
    push_round(round_id)
    items = {i.slice_id: i for i in registry.round_items(round_id)}
    shown = {}
    for index in (4, 8, 12):
        item = items[slices[index]]
        (prediction,) = client.sdk.predictions.list(task=item.ls_task_id)
        shown[index] = mask_from_results(prediction.result, (40, 48), NAMES)
        np.testing.assert_array_equal(decode_class_mask(item.prediction_rle), shown[index])

    def submit(index: int, mask: np.ndarray) -> None:
        client.submit(items[slices[index]].ls_task_id, brush_results(mask, NAMES), lead_time_s=12)

    submit(4, shown[4])  # accepted as shown: IoU 1, no review
    submit(8, (shown[8] + 1) % 3)  # every pixel changed: IoU 0 with the model
    submit(12, shown[12])  # two people answer slice 12 and disagree
    submit(12, (shown[12] + 1) % 3)
    first = sync_annotations(name)
    assert first["stored"] == 4 and first["review"]["sent"] == 2
    reviews = {r.slice_id: r for r in registry.reviews(name)}
    assert set(reviews) == {slices[8], slices[12]}
    assert reviews[slices[8]].reasons == "model" and reviews[slices[8]].model_iou == 0.0
    assert reviews[slices[12]].reasons == "model,annotators"
    assert {r.state for r in reviews.values()} == {"pending"}
    review_project = first["review"]["project"]
    assert review_project == client.ensure_project(review_title(name), labeling_config(NAMES))
    task = client.sdk.tasks.get(id=reviews[slices[8]].ls_task_id)
    assert {"image", "before_1", "after_1"} <= set(task.data) and task.data["index"] == 8
    (prefilled,) = client.sdk.predictions.list(task=task.id)  # the annotator's label
    np.testing.assert_array_equal(
        mask_from_results(prefilled.result, (40, 48), NAMES), (shown[8] + 1) % 3
    )

    client.submit(
        reviews[slices[12]].ls_task_id, brush_results((shown[12] + 1) % 3, NAMES)
    )  # approved
    truth = str(tmp_path / "labels.tif")
    assert oracle_reviews(name, {name: truth})["answered"] == 1  # corrects slice 8
    second = sync_annotations(name)
    assert (second["stored"], second["review"]["sent"], second["review"]["stored"]) == (0, 0, 2)
    reviews = {r.slice_id: r for r in registry.reviews(name)}
    assert (reviews[slices[8]].state, reviews[slices[12]].state) == ("corrected", "approved")
    best = {a.slice_id: a for a in registry.best_annotations(volume)}
    assert best[slices[8]].tier == Tier.EXPERT
    assert best[slices[8]].id == reviews[slices[8]].expert_annotation_id
    np.testing.assert_array_equal(decode_class_mask(best[slices[8]].mask_rle), electrode_volume[8])
    assert (best[slices[4]].tier, best[slices[12]].tier) == (Tier.ANNOTATOR, Tier.EXPERT)

    status = CliRunner().invoke(app, ["review", "status", "--dataset", name, "--json"])
    summary = json.loads(status.stdout)
    assert summary["states"] == {
        "queued": 0,
        "pushing": 0,
        "pending": 0,
        "approved": 1,
        "corrected": 1,
        "skipped": 0,
    }
    assert summary["reasons"] == {"model": 2, "annotators": 1}
    assert [r["state"] for r in summary["reviews"]] == ["corrected", "approved"]
    annotators, review = summary["agreement"]["annotators"], summary["agreement"]["review"]
    assert annotators and set(annotators) <= set(NAMES)  # slice 12: no pixel agrees
    assert all((v["dice"], v["pairs"]) == (0.0, 1) for v in annotators.values())
    corrected = (shown[8] + 1) % 3  # what the oracle reviewer corrected on slice 8
    for phase, v in review.items():
        c = NAMES.index(phase)
        on_8 = bool((corrected == c).any() or (electrode_volume[8] == c).any())
        assert v["pairs"] == int(on_8) + int(((shown[12] + 1) % 3 == c).any())
    assert min(v["dice"] for v in review.values()) < 1.0  # slice 8 was corrected
    table = CliRunner().invoke(app, ["review", "status", "--dataset", name])
    assert "annotator vs reviewer" in table.stdout and "1 approved" in table.stdout
    third = sync_annotations(name)
    assert (third["review"]["sent"], third["review"]["seen"]) == (0, 2)


def test_a_region_task_shows_the_slice_and_comes_back_as_a_sparse_label_of_the_region(
    tmp_path, setup, electrode_volume
):
    import torch

    from tomoloop.active.regions import Region
    from tomoloop.flows.labelstudio import sync_annotations
    from tomoloop.labels.phases import IGNORE
    from tomoloop.labels.studio_json import decode_brush_rle, rectangle_window
    from tomoloop.services import Services, answer_round, push_round_tasks, push_target, round_tasks

    registry, client, name, volume = setup
    model = _tiny_model(registry, name)
    slices = registry.register_slices(volume, "z", [9, 14])
    inside = Region(volume, "z", 9, 8, 12, 16)
    edge = Region(volume, "z", 14, 30, 40, 16)  # reaches past the 40 × 48 slice: 10 × 8 px
    round_id = registry.open_round(
        name,
        "entropy",
        model,
        [(slices[9], 0.9), (slices[14], 0.5)],
        16 * 16 + 80,
        {slices[9]: (8, 12, 16), slices[14]: (30, 40, 16)},
    )
    with Services.from_settings() as services:
        target = push_target(services, round_id, torch.device("cpu"))
        tasks = round_tasks(services, target, None, 1)
        pushed = push_round_tasks(services, target, tasks, 1)
    assert pushed["regions"]["tasks"] == 2 and "project" not in pushed  # no whole slice
    repushed = CliRunner().invoke(app, ["push", "--round", str(round_id), "--json"])
    assert json.loads(repushed.stdout)["regions"] == pushed["regions"]  # the same two tasks
    assert len(client.task_ids(pushed["regions"]["project"])) == 2
    items = {i.slice_id: i for i in registry.round_items(round_id)}
    task_9 = items[slices[9]].ls_task_id
    task = client.sdk.tasks.get(id=task_9)
    assert {"image", "before_1", "after_1"} <= set(task.data)
    assert task.data["region"] == {"y0": 8, "x0": 12, "size": 16}
    (prediction,) = client.sdk.predictions.list(task=task_9)
    (rectangle,) = [r for r in prediction.result if r["type"] == "rectanglelabels"]
    assert rectangle_window(rectangle, (40, 48)) == inside.window and rectangle["readonly"]
    brushes = [r for r in prediction.result if r["type"] == "brushlabels"]
    painted = np.zeros((40, 48), bool)
    for r in brushes:
        painted |= decode_brush_rle(r["value"]["rle"]).reshape(40, 48, 4)[:, :, 3] > 127
    assert brushes and painted[inside.window].all() and not painted[~inside.mask((40, 48))].any()

    wrong_everywhere = (electrode_volume[9] + 1) % 3  # painted inside and outside the region
    client.submit(task_9, [*brush_results(wrong_everywhere, NAMES), rectangle], lead_time_s=12)
    with Services.from_settings() as services:  # the oracle answers the other task
        assert answer_round(services, round_id, {name: str(tmp_path / "labels.tif")}, None, 0) == 1

    counts = sync_annotations(name)
    assert (counts["stored"], counts["regions"]["stored"], counts["rejected"]) == (2, 2, 0)
    assert counts["closed_rounds"] == [round_id]
    items = {i.slice_id: i for i in registry.round_items(round_id)}
    assert (items[slices[9]].state, items[slices[9]].annotation_seconds) == ("annotated", 12)
    best = {a.slice_id: a for a in registry.best_annotations(volume)}
    for slice_id, region, classes in (
        (slices[9], inside, wrong_everywhere),
        (slices[14], edge, electrode_volume[14]),
    ):
        expected = np.full((40, 48), IGNORE, np.uint8)
        expected[region.window] = classes[region.window]
        stored = best[slice_id]
        assert stored.tier == Tier.ANNOTATOR
        np.testing.assert_array_equal(decode_class_mask(stored.mask_rle), expected)
        assert stored.labelled_px == region.pixels((40, 48)) == (expected != IGNORE).sum()
    assert best[slices[14]].labelled_px == 80
    rounds = CliRunner().invoke(app, ["registry", "rounds", "--json"])
    (row,) = [r for r in json.loads(rounds.stdout) if r["id"] == round_id]
    assert (row["unit"], row["budget"], row["labelled_px"]) == ("region", 336, 16 * 16 + 80)
