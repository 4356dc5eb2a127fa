"""The train flow against both registry backends: register, resume, fine-tune."""

import numpy as np
import pytest
import tifffile
import torch

from tomoloop.db.registry import Registry
from tomoloop.services import Services, load_registered_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
]

CONFIG = {"epochs": 3, "patch": 32, "batch": 4, "patches_per_epoch": 16, "overlap": 8}
OPTIONS = {"base": 4, "depth": 2}


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


@pytest.fixture
def dataset(tmp_path, monkeypatch, registry_url, electrode_volume):
    """The electrode volume ingested as dataset ``nmc`` v1; its dataset version id."""
    from tomoloop.flows.ingest import ingest

    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    rng = np.random.default_rng(0)
    gray = electrode_volume * 80 + 20 + rng.integers(0, 20, electrode_volume.shape)
    tifffile.imwrite(tmp_path / "gray.tif", gray.astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", electrode_volume)
    result = ingest(
        gray=str(tmp_path / "gray.tif"),
        labels=str(tmp_path / "labels.tif"),
        name="nmc",
        phases="pore=0,nmc=1,cbd=2",
        split=(0.6, 0.2, 0.2),
    )
    return result["dataset_version_id"]


def test_training_registers_model_run_curve_and_scores(dataset, registry_url):
    from tomoloop.flows.train import train_semantic

    state = train_semantic(
        dataset, "unet", config=CONFIG, options=OPTIONS, device="cpu", return_state=True
    )
    result = state.result()
    # the fit is a task of the flow run, tagged for a concurrency limit on training
    (fit,) = _task_runs(state.state_details.flow_run_id)
    assert (fit.name.split("-")[0], fit.tags, fit.state.type.value) == (
        "fit", ["training"], "COMPLETED"
    )
    registry = Registry.from_url(registry_url)
    model = registry.model(result["model_version"])
    assert (model.architecture, model.backend, model.stage) == ("unet", "torch", "candidate")
    assert model.dataset_version_id == dataset and model.checkpoint_sha256
    (run,) = registry.training_runs(model.id)
    assert (run.status, run.epochs, run.device) == ("finished", 3, "cpu") and run.curve_uri
    metrics = registry.metrics(model.id)
    curve = sorted(m.step for m in metrics if m.name == "mIoU" and m.split == "val")
    assert curve == [1, 2, 3]
    test_miou = [m.value for m in metrics if m.name == "mIoU" and m.split == "test"]
    assert test_miou == [pytest.approx(result["mIoU"])]
    assert {m.class_name for m in metrics if m.name == "iou"} == {"pore", "nmc", "cbd"}
    services = Services.from_settings()
    net, spec, _ = load_registered_model(services, model.id)
    assert spec.class_names == ("pore", "nmc", "cbd") and spec.options == OPTIONS
    assert net(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)

    again = train_semantic(dataset, "unet", config=CONFIG, options=OPTIONS, device="cpu")
    assert again["model_version"] == model.id and again["already_trained"]
    assert len(registry.models()) == 1


def test_a_run_that_failed_resumes_as_the_same_model(dataset, registry_url, monkeypatch):
    from tomoloop.flows import train as train_module
    from tomoloop.services import training as training_service

    def broken_evaluate(*_args, **_kwargs):
        raise RuntimeError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(training_service, "evaluate_groups", broken_evaluate)
        with pytest.raises(RuntimeError, match="power cut"):
            train_module.train_semantic(dataset, "unet", config=CONFIG, options=OPTIONS)
    registry = Registry.from_url(registry_url)
    (model,) = registry.models()
    assert model.checkpoint_uri is None
    assert [r.status for r in registry.training_runs(model.id)] == ["failed"]

    result = train_module.train_semantic(dataset, "unet", config=CONFIG, options=OPTIONS)
    assert result["model_version"] == model.id and result["resumed_after"] == 3
    assert [r.status for r in registry.training_runs(model.id)] == ["finished"]
    assert registry.model(model.id).checkpoint_sha256


def test_fine_tuning_records_the_parent_and_keeps_frozen_weights(dataset, registry_url):
    from tomoloop.flows.train import train_semantic

    first = train_semantic(dataset, "unet", config=CONFIG, options=OPTIONS)["model_version"]
    tuned = train_semantic(
        dataset,
        "unet",
        config={**CONFIG, "epochs": 1},
        options=OPTIONS,
        parent=first,
        freeze_prefixes=("down",),
    )
    registry = Registry.from_url(registry_url)
    assert registry.model(tuned["model_version"]).parent_id == first
    assert registry.lineage(tuned["model_version"]).ancestors == [first]
    services = Services.from_settings()
    parent, _, _ = load_registered_model(services, first)
    child, _, _ = load_registered_model(services, tuned["model_version"])
    for name, value in parent.state_dict().items():
        if name.startswith("down") and "num_batches" not in name:
            assert torch.equal(value, child.state_dict()[name]), name  # BN statistics too
    assert not torch.equal(parent.head.weight, child.head.weight)


@pytest.mark.parametrize("registry_url", ["sqlite"], indirect=True)
def test_a_training_killed_with_sigkill_resumes_from_its_checkpoint(
    dataset, registry_url, tmp_path
):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [
        sys.executable, "-m", "tomoloop.cli", "train", "--dataset", "nmc", "--arch", "unet",
        "--epochs", "15", "--patience", "15", "--patch", "32", "--batch", "4",
        "--patches-per-epoch", "16", "--option", "base=4", "--option", "depth=2",
        "--average", "0.9", "--device", "cpu", "--json",
    ]  # fmt: skip
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's API
    victim = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    runs = tmp_path / "home" / "runs"
    deadline = time.monotonic() + 240
    while not list(runs.glob("*/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(runs.glob("*/last.pt")), "no checkpoint within 240 s"
    assert victim.poll() is None, "the training ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(30) == -signal.SIGKILL
    registry = Registry.from_url(registry_url)
    (model,) = registry.models()
    assert model.checkpoint_uri is None  # killed: nothing registered as trained
    assert [r.status for r in registry.training_runs(model.id)] == ["running"]

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["model_version"] == model.id and 1 <= result["resumed_after"] < 15
    (run,) = registry.training_runs(model.id)
    assert (run.status, run.epochs) == ("finished", 15)
    assert registry.model(model.id).checkpoint_sha256
    assert registry.model(model.id).config["train"]["average"] == 0.9
