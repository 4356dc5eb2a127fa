"""`tomoloop train / evaluate / predict / score` as a scientist runs them (SQLite registry)."""

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from tomoloop.cli import app
from tomoloop.db.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def ingested(tmp_path, monkeypatch, electrode_volume, ingest_electrode):
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", url)
    assert run("db", "upgrade").exit_code == 0
    ingest_electrode(tmp_path, electrode_volume)
    return url


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow  # trains a network
def test_train_evaluate_predict_score(ingested, tmp_path, electrode_volume):
    trained = run(
        "train", "--dataset", "nmc@1", "--arch", "unet", "--epochs", "10", "--patch", "32",
        "--batch", "8", "--patches-per-epoch", "64", "--lr", "0.003", "--device", "cpu",
        "--option", "base=8", "--option", "depth=2", "--no-augment", "--json",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    result = json.loads(trained.stdout)
    model = result["model_version"]
    assert result["split"] == "test" and result["mIoU"] > 0.8  # chance is < 0.34 here

    evaluated = json.loads(run("evaluate", "--model", model, "--dataset", "nmc", "--json").stdout)
    assert evaluated["mIoU"] == pytest.approx(result["mIoU"])
    assert set(evaluated["per_class"]) == {"pore", "nmc", "cbd"}
    assert {"iou", "dice"} <= set(evaluated["per_class"]["nmc"])

    predicted = run(
        "predict", tmp_path / "gray.tif", "--model", model, "--out", tmp_path / "pred.tif",
        "--uncertainty", tmp_path / "unsure.tif", "--axes", "zyx", "--device", "cpu", "--json",
    )  # fmt: skip
    document = json.loads(predicted.stdout)
    assert document["classes"] == ["pore", "nmc", "cbd"]
    labels = tifffile.imread(tmp_path / "pred.tif")
    assert labels.shape == electrode_volume.shape
    assert (labels == electrode_volume).mean() > 0.9
    assert tifffile.imread(tmp_path / "unsure.tif").dtype == np.float16

    scored = json.loads(
        run("score", "--model", model, "--volume", "nmc", "--method", "tta", "--json").stdout
    )
    assert scored["slices"] == 20 and scored["method"] == "tta/mean"
    registry = Registry.from_url(ingested)
    top = registry.top_unlabelled(model, 3)
    assert [score for _, score in top] == pytest.approx([r["score"] for r in scored["top"][:3]])

    models = json.loads(run("registry", "models", "--json").stdout)
    assert models[0]["arch"] == "unet" and models[0]["id"] == model


def test_cli_refuses_bad_requests_clearly(ingested, tmp_path):
    from tomoloop.errors import TomoloopError

    with pytest.raises(TomoloopError, match="unknown architecture 'resnet'"):
        run("train", "--dataset", "nmc", "--arch", "resnet")
    with pytest.raises(TomoloopError, match="KEY=VALUE"):
        run("train", "--dataset", "nmc", "--option", "base")
    with pytest.raises(TomoloopError, match="no dataset 'other'"):
        run("train", "--dataset", "other")
    with pytest.raises(TomoloopError, match="no model version with id 99"):
        run("evaluate", "--model", "99", "--dataset", "nmc")
    with pytest.raises(TomoloopError, match="--axes"):
        run("predict", tmp_path / "gray.tif", "--model", "1", "--out", "x.tif", "--axes", "q")
    with pytest.raises(TomoloopError, match="scoring method"):
        run("score", "--model", "1", "--volume", "nmc", "--method", "vibes")
