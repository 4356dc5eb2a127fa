"""Mask R-CNN on a registered dataset: trained through the CLI, registered with its COCO AP
and loss curve, loaded back to predict; bad requests refused before anything is stored.
"""

import json

import cv2
import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from tomoloop.cli import app
from tomoloop.db.registry import Registry, RegistryError
from tomoloop.errors import TomoloopError

SEMANTIC = {"epochs": 1, "patch": 32, "batch": 4, "patches_per_epoch": 8, "overlap": 8}
NET = {"base": 4, "depth": 2}
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
TINY = [
    "--arch", "maskrcnn", "--iterations", "6", "--depth", "18", "--norm", "FrozenBN",
    "--lr", "1e-3", "--min-size", "48", "--instances", "nmc", "--device", "cpu",
]  # fmt: skip


@pytest.fixture
def dataset(tmp_path, monkeypatch, registry_url, electrode_volume, ingest_electrode):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    ingest_electrode(tmp_path, electrode_volume, noise=8.0)
    return Registry.from_url(registry_url)


@pytest.mark.slow  # builds and trains a ResNet-50 FPN
@pytest.mark.parametrize("registry_url", ["sqlite"], indirect=True)
def test_the_r50_mask_rcnn_goes_through_train_and_particles(tmp_path, dataset):
    """The depth the issue and Detectron2's model zoo name, through the front door: two
    iterations, registered with its AP, then `particles` with it on the stack."""
    r50 = [*TINY, "--depth", "50", "--iterations", "2"]  # the last --depth wins
    result = CliRunner().invoke(app, ["train", "--dataset", "nmc", *r50, "--json"])
    assert result.exit_code == 0, result.output
    trained = json.loads(result.output)
    model = dataset.model(trained["model_version"])
    assert model.config["train"]["depth"] == 50 and 0 <= trained["segm_AP"] <= 1
    registered = {m.name: m.value for m in dataset.metrics(model.id) if m.split == "test"}
    assert registered["segm_AP"] == trained["segm_AP"]
    out = tmp_path / "particles"
    args = ["particles", str(tmp_path / "gray.tif"), "--model", str(model.id), "--out", str(out)]
    found = CliRunner().invoke(app, [*args, "--json"])
    assert found.exit_code == 0, found.output
    assert tifffile.imread(out / "labels.tif").shape == (20, 40, 48)


@pytest.mark.slow  # trains a network
@pytest.mark.parametrize("registry_url", ["sqlite"], indirect=True)
def test_maskrcnn_trains_registers_its_ap_and_finds_particles(tmp_path, dataset):
    from tomoloop.services import Services, load_registered_model

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
        net, _ = load_registered_model(services, model.id, torch.device("cpu"), "maskrcnn")
    finally:
        services.close()
    assert net.categories == ["nmc"]

    out, gray = tmp_path / "particles", str(tmp_path / "gray.tif")
    args = ["particles", gray, "--model", str(model.id), "--out", str(out), "--voxel-size", "0.5"]
    found = CliRunner().invoke(app, [*args, "--json"])
    assert found.exit_code == 0, found.output
    summary = json.loads(found.stdout)
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.tif", "particles.csv", "psd.png", "summary.json"
    ]  # fmt: skip
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == (20, 40, 48)
    assert len(np.unique(labels)) - 1 == summary["kept"]
    rows = (out / "particles.csv").read_text().splitlines()
    assert len(rows) - 1 == summary["particles"] >= summary["kept"]
    assert summary["voxel_size_um"] == [0.5, 0.5, 0.5] and summary["flawed"] is None
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, TomoloopError) and "exists" in str(again.exception)

    # the disagreement strategy: Mask R-CNN against a semantic model, no server needed
    from tomoloop.flows.loop import al_round
    from tomoloop.flows.train import train_semantic

    semantic = train_semantic(model.dataset_version_id, "unet", config=SEMANTIC, options=NET)
    chosen = al_round(
        "nmc", "disagreement", budget=3, min_gap=1, model=semantic["model_version"],
        instance_model=model.id, push=False, device="cpu",
    )  # fmt: skip
    scores = [c["score"] for c in chosen["chosen"]]
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(RegistryError, match="give its model version"):
        al_round("nmc", "disagreement", model=semantic["model_version"], push=False)

    # the maskal strategy: the Mask R-CNN's own confidence and flip disagreement
    unsure = al_round(
        "nmc", "maskal", budget=2, min_gap=1, model=semantic["model_version"],
        instance_model=model.id, push=False, device="cpu",
    )  # fmt: skip
    scores = [c["score"] for c in unsure["chosen"]]
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert not {c["slice"] for c in unsure["chosen"]} & {
        c["slice"] for c in chosen["chosen"]
    }  # the disagreement round's slices are pending: never chosen twice

    # transfer: fine-tune the Mask R-CNN (heads first, then all layers) from the registered one
    tuned = CliRunner().invoke(
        app, ["train", "--dataset", "nmc", *TINY, "--from", str(model.id), "--heads-iterations",
              "3", "--json"],
    )  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    child = dataset.model(json.loads(tuned.output)["model_version"])
    assert child.parent_id == model.id and child.config["train"]["heads_iterations"] == 3
    for extra, message in (
        (["--from", str(semantic["model_version"])], "is a unet model: give a Mask R-CNN"),
        (["--from", str(model.id), "--depth", "34"], "train with --depth 18 --norm FrozenBN"),
    ):
        refused = CliRunner().invoke(app, ["train", "--dataset", "nmc", *TINY, *extra])
        assert message in str(refused.exception), refused.output


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


@pytest.mark.slow  # trains a network
@pytest.mark.parametrize("registry_url", ["sqlite"], indirect=True)
def test_a_flaw_classifier_trained_from_png_slices_is_registered(
    tmp_path, monkeypatch, registry_url
):
    from tomoloop.labels.synthetic import cracked_particles
    from tomoloop.particles.flaws import HEIGHT_SPAN

    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    cracked = [i % 2 == 0 for i in range(12)]
    grey, labels, _ = cracked_particles((28, 28, 28 * len(cracked)), 11, cracked)
    for pid, crack in enumerate(cracked, start=1):
        folder = tmp_path / "slices" / ("flawed" if crack else "unflawed")
        folder.mkdir(parents=True, exist_ok=True)
        zs = np.flatnonzero((labels == pid).any(axis=(1, 2)))
        margin = int((1 - HEIGHT_SPAN) / 2 * len(zs))
        for z in zs[margin : len(zs) - margin : 3]:  # a few slices per particle: fast
            cv2.imwrite(str(folder / f"{pid}_{z}.png"), np.where(labels[z] == pid, grey[z], 0))
    args = ["flaws", "train", "--slices", str(tmp_path / "slices"), "--epochs", "12"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout)
    assert trained["val_accuracy"] >= 0.85  # half the slices are cracked: chance is 0.5
    model = Registry.from_url(registry_url).model(trained["model_version"])
    assert (model.architecture, model.dataset_version_id) == ("flawnet", None)

    (tmp_path / "slices" / "flawed").rename(tmp_path / "elsewhere")
    missing = CliRunner().invoke(app, args)
    assert isinstance(missing.exception, TomoloopError)
    assert "no PNG slices in" in str(missing.exception)
