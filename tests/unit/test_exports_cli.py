"""`tomoloop export labels / nnunet / model` and `predict --format ome-zarr`, each read back
by the tool it is for: ome-zarr-py's reader, nnU-Net's own dataset check, ONNX Runtime."""

import json
import warnings

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from tomoloop.cli import app
from tomoloop.errors import TomoloopError

PHASES = {0: "pore", 1: "nmc", 2: "cbd"}


@pytest.fixture
def ingested(tmp_path, monkeypatch, electrode_volume):
    """tmp_path with the electrode (gray.tif, labels.tif) ingested as dataset nmc (split
    0.6/0.2/0.2) into a SQLite registry there, through the ingest service (no Prefect)."""
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'registry.sqlite'}")
    assert run("db", "upgrade").exit_code == 0
    ingest_as(tmp_path, "nmc", (0.6, 0.2, 0.2), electrode_volume * 80 + 20, electrode_volume)
    return tmp_path


def ingest_as(folder, name, split, gray, labels) -> None:
    """Grey values and labels (z, y, x) written as folder/NAME-gray.tif (the one named
    gray.tif for dataset nmc; voxel size 0.5 × 0.25 × 0.25 µm) and labels.tif, ingested as
    dataset ``name`` with ``split`` through the ingest service."""
    import logging

    from tomoloop.labels.phases import PhaseMap
    from tomoloop.services import Services, ingest_stacks
    from tomoloop.stacks.opener import open_stack
    from tomoloop.stacks.tiff import write_stack

    size = (0.5, 0.25, 0.25)  # µm, in the grey stack's metadata
    stem = "" if name == "nmc" else f"{name}-"
    write_stack(folder / f"{stem}gray.tif", gray.astype(np.uint8), size)
    tifffile.imwrite(folder / f"{stem}labels.tif", labels)
    with (
        Services.from_settings() as services,
        open_stack(folder / f"{stem}gray.tif") as grey,
        open_stack(folder / f"{stem}labels.tif", size) as label_stack,
    ):
        phases = PhaseMap.parse("pore=0,nmc=1,cbd=2")
        log = logging.getLogger("test")
        ingest_stacks(services, grey, label_stack, phases, name, split, (), "", None, log)


def register_untrained_unet() -> int:
    """A tiny U-Net (untrained: export and format checks need no skill) as a registered
    model version; its id."""
    import torch

    from tomoloop.networks.registry import ModelSpec, save_model
    from tomoloop.services import Services

    spec = ModelSpec("unet", 1, 3, {"base": 4, "depth": 2}, tuple(PHASES.values()), tile=32)
    torch.manual_seed(0)
    with Services.from_settings() as services:
        stored = services.store.put_bytes(save_model(spec.build(), spec), ".pt")
        return services.registry.register_model(
            "tiny",
            "unet",
            "torch",
            None,
            checkpoint_uri=stored.key,
            checkpoint_sha256=stored.sha256,
        )


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def read_ome_zarr(path):
    """(levels as arrays, metadata) of the one image ome-zarr-py's reader finds at path."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (node,) = list(Reader(parse_url(str(path)))())
    return [np.asarray(level) for level in node.data], node.metadata


def test_dataset_labels_as_ome_zarr_and_tiff(ingested, electrode_volume):
    result = json.loads(
        run("export", "labels", "--dataset", "nmc", "--out", ingested / "z", "--json").stdout
    )
    assert result["unlabelled"] == 255 and result["volumes"][0]["file"] == "nmc.ome.zarr"
    levels, meta = read_ome_zarr(ingested / "z" / "nmc.ome.zarr")
    labels = levels[0]
    labelled = [z for z in range(labels.shape[0]) if (labels[z] != 255).any()]
    assert len(labelled) == result["volumes"][0]["slices"] >= 12  # a few gap slices stay out
    for z in range(labels.shape[0]):  # each slice is its label exactly, or unlabelled
        assert (labels[z] == electrode_volume[z]).all() or (labels[z] == 255).all()
    assert meta["properties"] == {
        **{v: {"name": n} for v, n in PHASES.items()},
        255: {"name": "unlabelled"},
    }
    assert meta["color"][255] == [0, 0, 0, 0]

    run("export", "labels", "--dataset", "nmc@1", "--out", ingested / "t", "--format", "tiff")
    assert (tifffile.imread(ingested / "t" / "nmc.tif") == labels).all()


def test_nnunet_dataset_passes_nnunets_own_check(ingested, electrode_volume):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    folder = ingested / "Dataset501_nmc"
    result = json.loads(
        run("export", "nnunet", "--dataset", "nmc", "--out", folder, "--json").stdout
    )
    verify_dataset_integrity(str(folder), num_processes=1)  # raises on any fault

    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["labels"] == {"background": 0, "nmc": 1, "cbd": 2}
    assert spec["numTraining"] == result["cases"]["train"] + result["cases"]["val"]
    (fold,) = json.loads((folder / "splits_final.json").read_text())
    assert len(fold["train"]) == result["cases"]["train"] and fold["val"]
    case = fold["val"][0]  # e.g. nmc_z0013: the slice's grey values and its labels, exact
    z = int(case.rsplit("z", 1)[1])
    grey = tifffile.imread(ingested / "gray.tif")[z]
    assert (tifffile.imread(folder / "imagesTr" / f"{case}_0000.tif") == grey).all()
    assert (tifffile.imread(folder / "labelsTr" / f"{case}.tif") == electrode_volume[z]).all()
    assert len(list((folder / "imagesTs").iterdir())) == result["cases"]["test"]

    with pytest.raises(TomoloopError, match="DatasetNNN_Name"):
        run("export", "nnunet", "--dataset", "nmc", "--out", ingested / "nmc_nnunet")


def test_nnunet_export_without_val_slices_leaves_the_folds_to_nnunet(ingested, electrode_volume):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    grey = electrode_volume * 70 + 30  # another scan: its own volume
    ingest_as(ingested, "all", (1.0, 0.0, 0.0), grey, electrode_volume)
    folder = ingested / "Dataset502_all"
    result = json.loads(
        run("export", "nnunet", "--dataset", "all", "--out", folder, "--json").stdout
    )
    assert result["cases"] == {"train": len(electrode_volume), "val": 0, "test": 0}
    assert result["splits_final"] is False and not (folder / "splits_final.json").exists()
    verify_dataset_integrity(str(folder), num_processes=1)
    told = run("export", "nnunet", "--dataset", "all", "--out", ingested / "Dataset504_all")
    said = " ".join(told.stdout.split())  # rich wraps at the terminal width
    assert "(20 train, 0 val, 0 test slices); no val slices: nnU-Net makes its own" in said

    ingest_as(ingested, "judge", (0.0, 0.0, 1.0), grey + 10, electrode_volume)
    with pytest.raises(TomoloopError, match="judge@1 has no labelled train or val slice"):
        run("export", "nnunet", "--dataset", "judge", "--out", ingested / "Dataset503_judge")
    assert not (ingested / "Dataset503_judge").exists()


def test_prediction_as_ome_zarr_equals_the_tiff_prediction(ingested):
    model = register_untrained_unet()
    predicted = run(
        "predict", ingested / "gray.tif", "--model", model, "--format", "ome-zarr",
        "--out", ingested / "pred.zarr", "--uncertainty", ingested / "unsure.zarr",
        "--device", "cpu", "--json",
    )  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    run(
        "predict", ingested / "gray.tif", "--model", model, "--out", ingested / "pred.tif",
        "--uncertainty", ingested / "unsure.tif", "--device", "cpu",
    )  # fmt: skip
    levels, meta = read_ome_zarr(ingested / "pred.zarr")
    assert (levels[0] == tifffile.imread(ingested / "pred.tif")).all()
    assert meta["properties"] == {v: {"name": n} for v, n in PHASES.items()}
    assert meta["coordinateTransformations"][0][0]["scale"] == [0.5, 0.25, 0.25]
    unsure, _ = read_ome_zarr(ingested / "unsure.zarr")
    assert unsure[0].dtype == np.float32
    assert (unsure[0] == tifffile.imread(ingested / "unsure.tif").astype(np.float32)).all()


@pytest.mark.slow  # the dynamo ONNX exporter: ~10 s idle, minutes on a loaded machine
def test_model_to_onnx_and_torchscript_read_by_onnx_runtime(ingested):
    import onnxruntime
    import torch

    model = register_untrained_unet()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exported = run("export", "model", "--model", model, "--out", ingested / "m", "--json")
    assert [str(w.message) for w in caught] == []  # a user sees no deprecation chatter
    document = json.loads(exported.stdout)
    assert document["files"] == {"torchscript": "model.pt", "onnx": "model.onnx"}
    n, c, h, w = 5, *document["input"][1:]
    images = np.random.default_rng(3).random((n, c, h, w), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(ingested / "m" / "model.onnx"))
    (onnx_logits,) = session.run(None, {"image": images})
    scripted = torch.jit.load(ingested / "m" / "model.pt")
    with torch.no_grad():
        script_logits = scripted(torch.from_numpy(images)).numpy()
    assert onnx_logits.shape == (n, 3, h, w)
    np.testing.assert_allclose(onnx_logits, script_logits, rtol=1e-4, atol=1e-4)
