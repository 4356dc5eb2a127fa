"""Every semantic network through the front door, as a scientist runs it: `tomoloop train`
→ `evaluate` → `predict`, then `train --from` it with its encoder frozen (SQLite
registry, tiny shapes, one epoch)."""

import json

import pytest
import tifffile
import torch
from typer.testing import CliRunner

from tomoloop.cli import app
from tomoloop.networks.registry import MODELS, freeze
from tomoloop.services import Services, load_registered_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,  # trains each network
    pytest.mark.usefixtures("prefect_harness"),
]

TINY = ("--epochs", "1", "--patch", "32", "--batch", "4", "--patches-per-epoch", "8",
        "--device", "cpu", "--no-augment")  # fmt: skip


@pytest.fixture
def ingested(tmp_path, monkeypatch, electrode_volume, ingest_electrode):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'registry.sqlite'}")
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    ingest_electrode(tmp_path, electrode_volume)
    return tmp_path


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_train_evaluate_predict_and_fine_tune_frozen(arch, ingested, electrode_volume):
    trained = run("train", "--dataset", "nmc@1", "--arch", arch, *TINY, "--json")
    model = trained["model_version"]
    assert trained["split"] == "test" and 0.0 <= trained["mIoU"] <= 1.0

    evaluated = run("evaluate", "--model", model, "--dataset", "nmc", "--json")
    assert evaluated["mIoU"] == pytest.approx(trained["mIoU"])

    out = ingested / f"{arch}.tif"
    run("predict", ingested / "gray.tif", "--model", model, "--out", out, "--device", "cpu",
        "--json")  # fmt: skip
    predicted = tifffile.imread(out)
    assert predicted.shape == electrode_volume.shape and predicted.max() <= 2

    tuned = run("train", "--dataset", "nmc@1", "--arch", arch, "--from", model,
                "--freeze", "encoder", *TINY, "--json")  # fmt: skip
    assert tuned["frozen_tensors"] > 0
    with Services.from_settings() as services:
        parent, _, _ = load_registered_model(services, model)
        child, _, _ = load_registered_model(services, tuned["model_version"])
    freeze(child, ("encoder",))  # which tensors the encoder is (a checkpoint does not say)
    encoder = [(n, p) for n, p in child.named_parameters() if not p.requires_grad]
    before = dict(parent.named_parameters())
    assert encoder and all(torch.equal(before[n], p) for n, p in encoder)  # kept as trained
