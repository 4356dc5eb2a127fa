"""Mask R-CNN on a registered dataset: trained through the CLI, registered with its COCO AP
and loss curve, loaded back to predict; bad requests refused before anything is stored.
"""

import json

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from tomoloop.cli import app
from tomoloop.db.registry import Registry
from tomoloop.errors import TomoloopError

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
TINY = [
    "--arch", "maskrcnn", "--iterations", "6", "--depth", "18", "--norm", "FrozenBN",
    "--lr", "1e-3", "--min-size", "48", "--instances", "nmc", "--device", "cpu",
]  # fmt: skip


@pytest.fixture
def dataset(tmp_path, monkeypatch, registry_url, electrode_volume):
    from tomoloop.flows.ingest import ingest

    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    noise = np.random.default_rng(0).normal(0, 8, electrode_volume.shape)
    gray = np.clip(electrode_volume * 80 + 20 + noise, 0, 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "gray.tif", gray)
    tifffile.imwrite(tmp_path / "labels.tif", electrode_volume)
    ingest(
        gray=str(tmp_path / "gray.tif"),
        labels=str(tmp_path / "labels.tif"),
        name="nmc",
        phases="pore=0,nmc=1,cbd=2",
        split=(0.6, 0.2, 0.2),
    )
    return Registry.from_url(registry_url)


@pytest.mark.parametrize("registry_url", ["sqlite"], indirect=True)
def test_maskrcnn_trains_registers_its_ap_and_predicts_once_loaded(dataset):
    from tomoloop.flows.instances import load_registered_maskrcnn
    from tomoloop.flows.resources import Services

    result = CliRunner().invoke(app, ["train", "--dataset", "nmc", *TINY, "--json"])
    assert result.exit_code == 0, result.output
    trained = json.loads(result.output)
    model = dataset.model(trained["model_version"])
    assert (model.architecture, model.backend, model.stage) == (
        "maskrcnn",
        "detectron2",
        "candidate",
    )
    metrics = dataset.metrics(model.id)
    losses = [m for m in metrics if m.name == "loss"]
    assert [m.step for m in losses] == list(range(6))
    ap = {m.name: m.value for m in metrics if m.split == "test"}
    assert set(ap) >= {"segm_AP", "segm_AP50", "bbox_AP"} and all(0 <= v <= 1 for v in ap.values())
    assert trained["instances"] == ["nmc"] and trained["segm_AP"] == ap["segm_AP"]

    again = CliRunner().invoke(app, ["train", "--dataset", "nmc", *TINY, "--json"])
    assert again.exit_code == 0, (again.output, again.exception)
    assert json.loads(again.output)["already_trained"] and len(dataset.models()) == 1

    services = Services.from_settings()
    try:
        net, _ = load_registered_maskrcnn(services, model.id, torch.device("cpu"))
    finally:
        services.close()
    assert net.categories == ["nmc"]


@pytest.mark.parametrize("registry_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--instances", "nickel"], "instance phase 'nickel' is not a phase"),
        (["--weights", "/no/weights.pkl"], "weights file /no/weights.pkl does not exist"),
        (["--depth", "77"], "depth 77: use 18, 34, 50 or 101"),
    ],
)
def test_bad_maskrcnn_requests_are_refused_before_anything_is_stored(dataset, extra, message):
    result = CliRunner().invoke(app, ["train", "--dataset", "nmc", *TINY, *extra])
    assert isinstance(result.exception, TomoloopError)  # main() prints it, no traceback
    assert message in str(result.exception)
    assert dataset.models() == []
