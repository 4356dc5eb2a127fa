"""The command line as a user runs it: a subprocess, its stdout, stderr and exit code."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from pycocotools.coco import COCO


def tomoloop(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tomoloop.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def stacks(tmp_path, electrode_volume):
    labels = tmp_path / "labels.tif"
    gray = tmp_path / "gray.tif"
    tifffile.imwrite(labels, electrode_volume)
    tifffile.imwrite(gray, (electrode_volume * 90 + 10).astype(np.uint8))
    return gray, labels


def test_help_lists_the_commands():
    result = tomoloop("--help")
    assert result.returncode == 0
    for command in ("coco", "stack", "demo"):
        assert command in result.stdout


def test_coco_from_stack_json_is_one_document(tmp_path, stacks):
    gray, labels = stacks
    out = tmp_path / "coco"
    result = tomoloop(
        "coco",
        "from-stack",
        "--labels",
        labels,
        "--gray",
        gray,
        "--phases",
        "pore=0,nmc=1,cbd=2",
        "--phase",
        "nmc",
        "--out",
        out,
        "--split",
        "0.6,0.2,0.2",
        "--gap",
        "1",
        "--particle-ids",
        "--min-area",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # exactly one JSON document
    assert summary["categories"] == ["nmc"]
    assert set(summary["annotation_files"]) == {"train", "val", "test"}
    total = 0
    for path in summary["annotation_files"].values():
        total += len(COCO(path).getAnnIds())
    assert total == sum(summary["instances"].values()) > 0
    assert len(list((out / "images").glob("z*.png"))) == summary["images_written"]


def test_coco_from_stack_splits_so_that_a_phase_at_the_stack_ends_reaches_every_split(tmp_path):
    """Block shuffle 0 of 54 slices puts val at 43-46 and test at 32-35, where this stack
    has no cbd: by default the split takes the first shuffle that leaves no split short
    of a phase; ``--seed 0`` still gives shuffle 0."""
    volume = np.zeros((54, 12, 12), np.uint8)
    volume[:, :, 6:] = 1
    volume[:14, :4, :4] = volume[47:, :4, :4] = 2  # cbd at the two ends only
    tifffile.imwrite(tmp_path / "labels.tif", volume)
    args = ["--labels", tmp_path / "labels.tif", "--phases", "pore=0,nmc=1,cbd=2",
            "--split", "0.8,0.1,0.1", "--no-masks", "--json"]  # fmt: skip
    cbd_in = {}
    for name, extra in (("balanced", []), ("zero", ["--seed", "0"])):
        result = tomoloop("coco", "from-stack", *args, *extra, "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        cbd_in[name] = {
            part: any(a["category_id"] == 2 for a in json.loads(Path(f).read_text())["annotations"])
            for part, f in summary["annotation_files"].items()
        }
        cbd_in[name]["seed"] = summary["split_seed"]
    assert cbd_in["balanced"] == {"train": True, "val": True, "test": True, "seed": 3}
    assert cbd_in["zero"] == {"train": True, "val": False, "test": False, "seed": 0}


def test_coco_from_stack_people_output_is_a_summary_line(tmp_path, stacks):
    _, labels = stacks
    result = tomoloop("coco", "from-stack", "--labels", labels, "--out", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    assert "slices →" in result.stdout and "instances" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "missing.tif"], "does not exist"),
        (["--labels", "labels.tif", "--phases", "pore=0,nmc=1"], "label values [2]"),
        (["--labels", "labels.tif", "--gray", "short.tif"], "same voxels"),
        (["--labels", "labels.tif", "--connectivity", "6"], "use 4 or 8"),
        (["--labels", "labels.tif", "--min-area", "-1"], "--min-area -1: must be ≥ 0"),
        (["--labels", "labels.tif", "--workers", "0"], "--workers 0: must be ≥ 1"),
        (["--labels", "labels.tif", "--seed", "-1"], "--seed -1: must be ≥ 0"),
        (["--labels", "labels.tif", "--split", "0.9,0.2,0.1"], "three fractions"),
        (
            ["--labels", "labels.tif", "--phases", "pore=0,nmc=1,cbd=2", "--phase", "sei"],
            "not in the phase map",
        ),
        (["--labels", "labels.tif", "--voxel-size", "0,1"], "--voxel-size"),
        (["--labels", "float.tif"], "integer"),
    ],
)
@pytest.mark.usefixtures("stacks")
def test_bad_input_gives_one_clear_line_and_writes_nothing(tmp_path, args, message):
    tifffile.imwrite(tmp_path / "short.tif", np.zeros((5, 6, 7), np.uint8))
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((5, 6, 7), np.float32))
    result = tomoloop("coco", "from-stack", *args, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    # stderr is a pipe here: one unwrapped line, no blank line left by the progress bar
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "\x1b" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_json_errors_are_one_document_on_stdout(tmp_path, stacks):
    _, labels = stacks
    args = ["--labels", labels, "--phases", "pore=0,nmc=1", "--out", tmp_path / "o", "--json"]
    result = tomoloop("coco", "from-stack", *args)
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["kind"] == "StackValidationError"
    assert result.stderr == f"error: {document['error']}\n"
    assert "holds label values [2]" in document["error"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "g.tif", "--nosuch"], "No such option: --nosuch"),
        (["registry", "show"], "Missing argument 'kind'"),
        (["train", "--dataset", "d", "--epochs", "abc"], "Invalid value for '--epochs'"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
    ],
)
def test_usage_errors_are_one_line_naming_the_help(args, message):
    result = tomoloop(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {message}")
    assert result.stderr.rstrip().endswith("--help'") and "\x1b" not in result.stderr
    document = json.loads(tomoloop(*args, "--json").stdout)
    assert document["kind"] == "UsageError" and document["error"].startswith(message)


def test_help_and_a_bare_group_still_show_the_help():
    assert tomoloop("stack", "info", "--help").returncode == 0
    bare = tomoloop("registry")
    assert bare.returncode == 2 and "Usage:" in bare.stdout + bare.stderr


def test_serve_api_refuses_the_network_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("TOMOLOOP_API_TOKEN", raising=False)
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path))
    result = tomoloop("serve-api", "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --host 0.0.0.0 would open the registry API")
    assert result.stderr.count("\n") == 1 and "TOMOLOOP_API_TOKEN" in result.stderr


def test_connecting_the_ml_backend_of_an_unknown_dataset_is_one_line(tmp_path, monkeypatch):
    from tomoloop.db.engine import make_engine, upgrade

    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path))
    upgrade(make_engine(f"sqlite:///{tmp_path / 'registry.sqlite'}"))
    result = tomoloop("labelstudio", "connect", "--dataset", "nobody", "--json")
    assert result.returncode == 2 and result.stdout.count("\n") == 1
    assert "nobody" in json.loads(result.stdout)["error"] and "Traceback" not in result.stderr


def test_stack_info_reads_voxel_size(tmp_path):
    path = tmp_path / "v.tif"
    tifffile.imwrite(
        path,
        np.zeros((4, 5, 6), np.uint16),
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"},
    )
    result = tomoloop("stack", "info", path, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["shape_zyx"] == [4, 5, 6] and info["dtype"] == "uint16"
    assert info["voxel_size_um"] == pytest.approx([0.5, 0.5, 0.5])


def test_db_upgrade_downgrade_and_unreachable_server(tmp_path, monkeypatch):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOMOLOOP_DATABASE_URL", raising=False)
    up = tomoloop("db", "upgrade", "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["revision"] == "0008"
    assert (tmp_path / "home" / "registry.sqlite").is_file()
    down = tomoloop("db", "downgrade", "--json")
    assert json.loads(down.stdout)["revision"] == "0007"
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", "postgresql+psycopg://u:secret@127.0.0.1:1/x")
    unreachable = tomoloop("db", "upgrade")
    assert unreachable.returncode == 2 and "cannot reach the registry" in unreachable.stderr
    assert "secret" not in unreachable.stderr and "Traceback" not in unreachable.stderr


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.5", (0.5,) * 3),
        ("64nm", (0.064,) * 3),
        ("1,0.5,0.5um", (1.0, 0.5, 0.5)),
        ("0.2 µm", (0.2,) * 3),
        ("2mm", (2000.0,) * 3),
    ],
)
def test_voxel_size_takes_units(text, expected):
    from tomoloop.cli import parse_voxel_size

    assert parse_voxel_size(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["3furlong", "0", "1,2", "-1", "nm"])
def test_bad_voxel_sizes(text):
    from tomoloop.cli import parse_voxel_size
    from tomoloop.errors import TomoloopError

    with pytest.raises(TomoloopError, match="--voxel-size"):
        parse_voxel_size(text)


@pytest.mark.slow  # > 20 s
def test_microstructure_json_is_the_documented_document(stacks, electrode_volume):
    from tomoloop.metrics.structure import microstructure

    _, labels = stacks
    result = tomoloop(
        "microstructure",
        labels,
        "--phases",
        "pore=0,nmc=1,cbd=2",
        "--voxel-size",
        "0.5",
        "--axes",
        "zx",
        "--tortuosity-phases",
        "all",
        "--device",
        "cpu",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"voxel_size_um", "length_unit", "phases"} and doc["length_unit"] == "µm"
    assert doc["voxel_size_um"] == [0.5, 0.5, 0.5]
    assert set(doc["phases"]) == {"pore", "nmc", "cbd"}
    expected = microstructure(electrode_volume, ("pore", "nmc", "cbd"), (0.5, 0.5, 0.5), "zx")
    assert doc == expected
    assert doc["phases"]["cbd"]["tortuosity"]["x"] == pytest.approx(1.0, abs=1e-3)  # a slab
    bad = tomoloop("microstructure", labels, "--phases", "pore=0,nmc=1", "--json")
    assert bad.returncode != 0 and "holds label values [2]" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_microstructure_solves_the_gates_tortuosity_unless_told_otherwise(stacks):
    _, labels = stacks
    args = ["microstructure", labels, "--phases", "pore=0,nmc=1,cbd=2", "--json"]
    result = tomoloop(*args)
    assert result.returncode == 0, result.stderr
    taus = {name: p["tortuosity"] for name, p in json.loads(result.stdout)["phases"].items()}
    assert set(taus["pore"]) == {"x"} and taus["nmc"] == taus["cbd"] == {}
    chosen = tomoloop(*args, "--tortuosity-phases", "cbd", "--axes", "x")
    cbd = json.loads(chosen.stdout)["phases"]["cbd"]["tortuosity"]
    assert cbd["x"] == pytest.approx(1.0, abs=1e-3)  # a slab
    bad = tomoloop(*args, "--tortuosity-phases", "nickel")
    assert bad.returncode == 2 and "tortuosity phase 'nickel': name one of" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_microstructure_adds_the_particle_size_distribution_of_a_phase(stacks):
    _, labels = stacks
    args = ["microstructure", labels, "--phases", "pore=0,nmc=1,cbd=2", "--voxel-size", "0.5"]
    result = tomoloop(*args, "--axes", "z", "--particles", "nmc", "--bin-um", "1", "--json")
    assert result.returncode == 0, result.stderr
    psd = json.loads(result.stdout)["phases"]["nmc"]["particle_size_distribution"]
    assert psd["particles"] == 2 and sum(psd["counts"]) == 2  # the two balls, radii 7 and 8
    assert psd["mean_equivalent_radius_um"] == pytest.approx(0.5 * 7.5, rel=0.05)
    bad = tomoloop(*args, "--particles", "nickel")
    assert bad.returncode != 0 and "--particles nickel: name one of pore, nmc, cbd" in bad.stderr
    no_bin = tomoloop(*args, "--particles", "nmc", "--bin-um", "0")  # before any tortuosity
    assert no_bin.returncode == 2 and "'--bin-um': 0.0: must be > 0" in no_bin.stderr


@pytest.mark.slow  # trains a network
def test_benchmark_al_json_is_the_documented_document(tmp_path, stacks):
    gray, labels = stacks
    base = ["benchmark", "al", "--gray", gray, "--labels", labels, "--phases", "pore=0,nmc=1,cbd=2"]
    tiny = "--seeds 1 --rounds 1 --budget 1 --initial 1 --epochs 1 --patch 32"
    tiny += " --patches-per-epoch 8 --option base=4 --option depth=2 --device cpu"
    result = tomoloop(
        *base, "--strategies", "random,entropy", *tiny.split(),
        "--plot", tmp_path / "curves.png", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc["strategies"]) == {"random", "entropy"}
    for values in doc["strategies"].values():
        assert {"labels_to_95", "auc", "curve"} <= set(values)
        assert [n for n, _ in values["curve"]] == [1, 2]
    assert 0 <= doc["full_data_miou"] <= 1 and (tmp_path / "curves.png").stat().st_size > 1000
    unknown = tomoloop(*base, "--strategies", "random,vibes")
    assert unknown.returncode != 0 and "unknown strategy 'vibes'" in unknown.stderr


def test_prefect_console_hides_tomoloop_errors_and_chatter_but_not_bugs():
    import logging

    import prefect

    from tomoloop.errors import StackValidationError
    from tomoloop.terminal import shown_on_terminal

    engine = str(Path(prefect.__file__).parent / "flow_engine.py")

    def record(path, level, message="Encountered exception during execution", error=None):
        exc_info = (type(error), error, None) if error else None
        return logging.LogRecord("prefect.flow_runs", level, path, 1, message, None, exc_info)

    assert not shown_on_terminal(record(engine, logging.ERROR, error=StackValidationError("x")))
    assert shown_on_terminal(record(engine, logging.ERROR, error=ValueError("a bug")))
    assert not shown_on_terminal(record(engine, logging.INFO, "Beginning flow run 'a'"))
    assert not shown_on_terminal(record(engine, logging.ERROR, "Finished in state Failed()"))
    assert shown_on_terminal(record("/src/flows/train.py", logging.INFO, "epoch 1: loss 0.3"))


def test_stack_info_reads_an_hdf5_dataset_and_refuses_a_missing_one_in_one_line(tmp_path):
    import h5py

    volume = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    with h5py.File(tmp_path / "scan.h5", "w") as h5:
        h5.create_dataset("entry/data/data", data=volume).attrs["element_size_um"] = [2, 1, 1]
    result = tomoloop("stack", "info", f"{tmp_path}/scan.h5:/entry/data/data", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["shape_zyx"] == [4, 5, 6] and info["voxel_size_um"] == [2, 1, 1]
    assert info["source"] == f"{tmp_path}/scan.h5:/entry/data/data"
    missing = tomoloop("stack", "info", f"{tmp_path}/scan.h5:/entry/nothing", "--json")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    document = json.loads(missing.stdout)
    assert document["kind"] == "StackReadError"
    assert "has no dataset /entry/nothing" in document["error"]
    assert "/entry/data/data" in document["error"]
@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe", "paper"], "unknown recipe 'paper': choose one of default, seed"),
        (["--class-weights", "heavy"], "class_weights 'heavy' must be 'balanced' or numbers"),
        (["--arch", "matphase", "--recipe", "seed", "--loss", "dice"], "needs --loss ce or bce"),
        (["--loss", "tversky", "--tversky-beta", "1.5"], "tversky_beta 1.5 must lie between"),
        (["--average", "1"], "average 1.0 must be ≥ 0 and below 1"),
    ],
)
def test_train_refuses_a_bad_recipe_or_class_weights_before_any_work(
    tmp_path, monkeypatch, args, message
):
    from typer.testing import CliRunner

    from tomoloop.cli import app
    from tomoloop.errors import TomoloopError

    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path))
    with pytest.raises(TomoloopError, match=re.escape(message)):
        CliRunner().invoke(app, ["train", "--dataset", "nmc", *args], catch_exceptions=False)
    assert not (tmp_path / "runs").exists()


def test_the_demos_last_line_says_how_to_stop_what_it_leaves_running(capsys, monkeypatch):
    from tomoloop.cli import demo as demo_cli
    from tomoloop.cli import output

    monkeypatch.setattr(output.out, "width", 400)  # one line, however narrow the terminal
    demo_cli._show_demo(
        {
            "models": [],
            "rounds": [],
            "loop": {"stopped": "3 rounds done", "champion": 4},
            "new_scan": None,
            "report": "demo-out/report.md",
            "label_studio": "http://127.0.0.1:8080",
            "ml_backend": "http://127.0.0.1:8700/ml/nmc-demo",
            "home": "/h",
        }
    )
    said = capsys.readouterr().out
    assert "Label Studio stays up at http://127.0.0.1:8080 (`tomoloop labelstudio down`" in said
    assert "ML backend at http://127.0.0.1:8700/ml/nmc-demo (`tomoloop serve-api --stop`)" in said
