"""tomoloop's HTTP app as the real Label Studio's ML backend: connected through Label
Studio's API, asked for predictions by Label Studio, the predictions read back from Label
Studio equal to ``tomoloop predict`` on the same slices."""

import json
import os
import time
import uuid

import httpx
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from tomoloop.adapters.labelstudio import LabelStudioClient, LabelStudioRefused
from tomoloop.cli import app
from tomoloop.db.registry import Registry
from tomoloop.labels.studio_json import mask_from_results

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
]
NAMES = ("pore", "nmc", "cbd")


def _champion(registry: Registry, name: str) -> int:
    """A 2-epoch U-Net of the dataset, registered and made its champion."""
    from tomoloop.flows.train import train_semantic

    config = {"epochs": 2, "patch": 32, "batch": 4, "patches_per_epoch": 16, "overlap": 8}
    model = train_semantic(
        registry.dataset(name).id, "unet", config=config, options={"base": 4, "depth": 2}
    )["model_version"]
    registry.promote(model)
    return model


def _connect(name: str, url: str) -> dict:
    answer = CliRunner().invoke(
        app, ["labelstudio", "connect", "--dataset", name, "--url", url, "--json"]
    )
    assert answer.exit_code == 0, answer.output
    return json.loads(answer.stdout)


def test_label_studio_asks_the_champion_for_any_tasks_prediction_and_starts_retraining(
    tmp_path, label_studio, label_studio_env, serve_http, electrode_volume, ingest_electrode
):
    from tomoloop.flows.labelstudio import push_round

    name = f"nmc-{uuid.uuid4().hex[:8]}"
    volume = ingest_electrode(tmp_path, electrode_volume, name=name)["volume_id"]
    registry = Registry.from_url(os.environ["TOMOLOOP_DATABASE_URL"])
    champion = _champion(registry, name)
    trained: list[str] = []
    backend = serve_http(backend=True, on_train=trained.append)
    client = LabelStudioClient(*label_studio.credentials())

    connected = _connect(name, backend)
    project, backend_id = connected["project"], connected["ml_backend"]
    assert (connected["model_version"], connected["model_version_shown"]) == (champion, False)
    assert connected["backend_url"] == f"{backend}/ml/{name}"
    assert _connect(name, backend)["ml_backend"] == backend_id  # connecting again: one backend
    (registered,) = client.sdk.ml.list(project=project)
    assert (registered.url, registered.state) == (f"{backend}/ml/{name}", "CO")

    # tasks without a prediction: a round pushed without a model, and one someone imported
    slices = registry.register_slices(volume, "z", [3, 9, 14])
    round_id = registry.open_round(name, "random", None, [(s, 1.0) for s in slices.values()])
    push_round(round_id)
    tasks = {i.slice_id: i.ls_task_id for i in registry.round_items(round_id)}
    images = {"image": "/x.png", "before_1": "/x.png", "after_1": "/x.png"}
    client.sdk.projects.import_tasks(id=project, request=[{"data": images}])
    (foreign,) = [t.id for t in client.sdk.tasks.list(project=project) if "key" not in t.data]
    asked = [tasks[slices[3]], tasks[slices[9]], foreign]
    client.retrieve_predictions(project, asked)
    client.sdk.tasks.get(id=tasks[slices[14]])  # an annotator opens a task: predicted too

    labels = tmp_path / "predicted.tif"
    gray = str(tmp_path / "gray.tif")
    predicted = CliRunner().invoke(
        app, ["predict", gray, "--model", str(champion), "--out", str(labels), "--device", "cpu"]
    )
    assert predicted.exit_code == 0, predicted.output
    expected = tifffile.imread(labels)
    for index in (3, 9, 14):
        (prediction,) = client.sdk.predictions.list(task=tasks[slices[index]])
        assert prediction.model_version == str(champion)
        assert 1 / (1 + np.log(3)) <= prediction.score <= 1.0  # 1 / (1 + mean entropy)
        mask = mask_from_results(prediction.result, (40, 48), NAMES)
        np.testing.assert_array_equal(mask, expected[index])
    assert not list(client.sdk.predictions.list(task=foreign))  # names no slice: none

    client.retrieve_predictions(project, asked)  # the same champion: nothing new
    assert len(client.sdk.predictions.list(task=tasks[slices[9]])) == 1
    assert _connect(name, backend)["model_version_shown"]  # its predictions exist now
    assert client.sdk.projects.get(id=project).model_version == str(champion)

    client.sdk.ml.train(id=backend_id)  # the project's "Start training"
    deadline = time.monotonic() + 30
    while not trained and time.monotonic() < deadline:
        time.sleep(0.2)
    assert trained == [name]


def test_connecting_needs_a_running_backend_and_the_backend_a_known_dataset(
    tmp_path, label_studio_env, serve_http, electrode_volume, ingest_electrode
):
    from tomoloop.services import Services, connect_backend

    name = f"nmc-{uuid.uuid4().hex[:8]}"
    ingest_electrode(tmp_path, electrode_volume, name=name)
    with (
        Services.from_settings() as services,
        pytest.raises(LabelStudioRefused, match="serve-api"),
    ):
        connect_backend(services, name, "http://127.0.0.1:9")  # nothing listens there
    backend = serve_http(backend=True)
    unknown = httpx.post(f"{backend}/ml/nobody/setup", json={})
    assert unknown.status_code == 404 and "nobody" in unknown.text
    setup = httpx.post(f"{backend}/ml/{name}/setup", json={"project": "1.0"})
    assert setup.json() == {"model_version": ""}  # no champion yet
    answer = httpx.post(f"{backend}/ml/{name}/predict", json={"tasks": [{"id": 1, "data": {}}]})
    (result,) = answer.json()["results"]
    assert "result" not in result and "no champion" in result["error"]
