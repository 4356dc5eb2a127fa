"""Prediction and scoring as Prefect tasks on a Dask cluster (a LocalCluster of worker
processes) give what the single-process path gives."""

import json

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from tomoloop.cli import app
from tomoloop.db.registry import Registry
from tomoloop.errors import OutputError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
]


@pytest.fixture
def trained(tmp_path, monkeypatch, registry_url, electrode_volume, ingest_electrode):
    """A briefly trained U-Net registered for the ingested electrode; (registry, model id)."""
    from tomoloop.flows.train import train_semantic

    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    ingest_electrode(tmp_path, electrode_volume, noise=20)
    registry = Registry.from_url(registry_url)
    config = {"epochs": 2, "patch": 32, "batch": 4, "patches_per_epoch": 16, "overlap": 8}
    model = train_semantic(
        registry.dataset("nmc").id, "unet", config=config, options={"base": 4, "depth": 2}
    )["model_version"]
    return registry, model


@pytest.mark.parametrize("registry_url", ["sqlite"], indirect=True)
def test_a_local_dask_cluster_predicts_and_scores_as_one_process_does(trained, tmp_path):
    from tomoloop.active.scoring import ScoreOptions, score_stack
    from tomoloop.inference.predict import predict_volume
    from tomoloop.services import Services, load_registered_model
    from tomoloop.stacks.opener import open_stack

    registry, model = trained
    services = Services.from_settings()
    network, spec, _ = load_registered_model(services, model)
    volume = registry.volume_named("nmc")
    with open_stack(volume.path) as stack:
        predict_volume(
            network, stack, tmp_path / "one.tif", tmp_path / "one-entropy.tif",
            tile=spec.tile, overlap=spec.tile // 4,
        )  # fmt: skip
        options = ScoreOptions("entropy", "mean", 1, spec.tile, spec.tile // 4)
        expected = {i: f.score for i, f in score_stack(network, stack, options)}

    answer = CliRunner().invoke(app, [
        "predict-distributed", "--model", str(model), "--volume", "nmc", "--out",
        str(tmp_path / "pred.zarr"), "--chunk", "6", "--workers", "2", "--device", "cpu", "--json",
    ])  # fmt: skip
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.stdout)
    assert (result["slices"], result["tasks"]) == (20, 4)
    group = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")
    np.testing.assert_array_equal(group["labels"][:], tifffile.imread(tmp_path / "one.tif"))
    np.testing.assert_array_equal(
        group["uncertainty"][:], tifffile.imread(tmp_path / "one-entropy.tif")
    )
    scores = {int(i): s for i, s in result["scores"].items()}
    assert scores == pytest.approx(expected, rel=1e-6)
    stored = dict(registry.top_unlabelled(model, 20))
    assert sorted(stored.values()) == pytest.approx(sorted(expected.values()), rel=1e-6)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []

    again = CliRunner().invoke(app, [
        "predict-distributed", "--model", str(model), "--volume", "nmc", "--out",
        str(tmp_path / "pred.zarr"),
    ])  # fmt: skip
    assert isinstance(again.exception, OutputError) and "exists" in str(again.exception)
