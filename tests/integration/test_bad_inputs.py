"""The bad-input corpus: malformed TIFF stacks, CLI arguments, COCO files, Label Studio
annotations and webhook bodies, each generated here. Every one gives an error that names
what was wrong and nothing is written — no registry row, no artifact, no output file — and
a rejected annotation is recorded as rejected with its reason, never dropped silently.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import tifffile
from fastapi.testclient import TestClient
from prefect.settings import PREFECT_API_URL
from sqlalchemy import inspect
from typer.testing import CliRunner

from tomoloop.adapters.http import create_app
from tomoloop.adapters.labelstudio_registry import Intake, handle_annotation, project_title
from tomoloop.cli import app
from tomoloop.config import Settings
from tomoloop.db.registry import Registry
from tomoloop.errors import TomoloopError
from tomoloop.labels.studio_json import PulledAnnotation, brush_results
from tomoloop.particles.instances import coco_from_slices

pytestmark = pytest.mark.integration
NAMES = ("pore", "nmc", "cbd")
PHASES = "pore=0,nmc=1,cbd=2"
SECRET = "corpus-secret"


@pytest.fixture
def home(ingested_home, monkeypatch):
    """The module's registry home, in the environment; the registry's state is compared
    before and after each test.
    """
    path, env = ingested_home
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    registry = Registry.from_url(env["TOMOLOOP_DATABASE_URL"])
    before = _state(registry, path)
    yield registry
    assert _state(registry, path) == before, "a bad input changed the registry or the store"


def _state(registry: Registry, home: Path) -> tuple:
    """Row count of every table except the Label Studio event log, and the stored files."""
    tables = sorted(set(inspect(registry.engine).get_table_names()) - {"ls_events"})
    with registry.engine.connect() as c:
        counts = {t: c.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in tables}
    files = sorted(
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.is_file() and "r.sqlite" not in p.name
    )
    return counts, files


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- TIFF stacks and CLI


def _stacks(work: Path, labels: np.ndarray) -> None:
    """A good gray/labels pair in ``work`` (cases then spoil one of them)."""
    tifffile.imwrite(work / "labels.tif", labels)
    tifffile.imwrite(work / "gray.tif", (labels * 80 + 20).astype(np.uint8))


def _ingest(*extra: str, phases: str = PHASES, name: str = "bad") -> list[str]:
    return ["ingest", "gray.tif", "--labels", "labels.tif", "--name", name, "--phases", phases,
            *extra]  # fmt: skip


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _relabel(work: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    labels = tifffile.imread(work / "labels.tif")
    tifffile.imwrite(work / "labels.tif", change(labels))


def _undeclared(labels: np.ndarray) -> np.ndarray:
    labels[12, 3, 4] = 7
    return labels


CLI_CASES: dict[str, tuple[Callable[[Path], None], list[str], str]] = {
    "tiff: not a TIFF": (
        lambda w: (w / "gray.tif").write_text("grey values, honest"),
        _ingest(),
        "gray.tif is not a readable TIFF",
    ),
    "tiff: truncated": (
        lambda w: _truncate(w / "labels.tif"),
        _ingest(),
        "labels.tif .* corrupt or truncated",
    ),
    "tiff: empty file": (
        lambda w: (w / "gray.tif").write_bytes(b""),
        _ingest(),
        "gray.tif is not a readable TIFF",
    ),
    "tiff: missing file": (lambda w: (w / "gray.tif").unlink(), _ingest(), "does not exist"),
    "tiff: shapes differ": (
        lambda w: tifffile.imwrite(w / "gray.tif", np.zeros((20, 40, 47), np.uint8)),
        _ingest(),
        "same voxels",
    ),
    "tiff: undeclared label value": (
        lambda w: _relabel(w, _undeclared),
        _ingest(),
        r"z=12.*\[7\]|\[7\].*z=12",
    ),
    "tiff: float labels": (
        lambda w: _relabel(w, lambda a: a.astype(np.float32)),
        _ingest(),
        "integer",
    ),
    "tiff: RGB gray stack": (
        lambda w: tifffile.imwrite(
            w / "gray.tif", np.zeros((20, 40, 48, 3), np.uint8), photometric="rgb"
        ),
        _ingest(),
        "convert RGB",
    ),
    "cli: phase map without '='": (lambda w: None, _ingest(phases="pore:0,nmc:1"), "NAME=VALUE"),
    "cli: two phases, one value": (lambda w: None, _ingest(phases="pore=0,nmc=0"), "values repeat"),
    "cli: voxel size not a number": (
        lambda w: None,
        _ingest("--voxel-size", "fast"),
        "--voxel-size 'fast'",
    ),
    "cli: split of two fractions": (
        lambda w: None,
        _ingest("--split", "0.5,0.5"),
        "not three fractions",
    ),
    "cli: unknown architecture": (
        lambda w: None,
        ["train", "--dataset", "nmc", "--arch", "resnext"],
        "unknown architecture 'resnext'",
    ),
    "cli: unknown dataset": (
        lambda w: None,
        ["coco", "export", "--dataset", "ghost", "--out", "out"],
        "no dataset 'ghost'.*registry datasets",
    ),
    "cli: unknown model": (
        lambda w: None,
        ["registry", "show", "model", "999"],
        "999.*registry models",
    ),
    "cli: empty name": (lambda w: None, _ingest(name=""), "--name '' is empty"),
    "cli: blank name": (lambda w: None, _ingest(name="   "), "--name ' ' is empty"),
    "cli: name with a newline": (
        lambda w: None,
        _ingest(name="a\nb"),
        r"--name 'a\\nb' holds a control character",
    ),
    "cli: name with the version separator": (
        lambda w: None,
        _ingest(name="nmc@2"),
        "--name 'nmc@2' holds '@'",
    ),
    "cli: name longer than the column": (
        lambda w: None,
        _ingest(name="n" * 300),
        "is 300 characters long: a name is 1–200 characters",
    ),
    "cli: model name with a slash": (
        lambda w: None,
        ["train", "--dataset", "nmc", "--name", "a/b"],
        "--name 'a/b' holds '/'",
    ),
    "cli: unknown loss": (
        lambda w: None,
        ["train", "--dataset", "nmc", "--loss", "nosuch"],
        "loss 'nosuch' is not one of ce, bce",
    ),
    "cli: model id beyond the integer range": (
        lambda w: None,
        ["registry", "show", "model", "99999999999999999999999"],
        "no model version with id 99999999999999999999999",
    ),
    "cli: lineage id beyond the integer range": (
        lambda w: None,
        ["registry", "lineage", "99999999999999999999999"],
        "no model version with id 99999999999999999999999",
    ),
    "cli: dataset version beyond the integer range": (
        lambda w: None,
        ["registry", "show", "dataset", "nmc@99999999999999999999999"],
        "no dataset 'nmc@99999999999999999999999'",
    ),
    "cli: unknown strategy": (
        lambda w: None,
        ["round", "--dataset", "nmc", "--strategy", "oracle"],
        "unknown strategy 'oracle'",
    ),
    "cli: maskrcnn on a device that does not exist": (
        lambda w: None,
        ["train", "--dataset", "nmc", "--arch", "maskrcnn", "--device", "gpu"],
        "unknown device 'gpu'",
    ),
    "cli: round pre-filled by an unknown instance model": (
        lambda w: None,
        ["round", "--dataset", "nmc", "--instance-model", "999"],
        "no model version with id 999",
    ),
    "cli: loop with an unknown strategy": (
        lambda w: None,
        ["loop", "--dataset", "nmc", "--annotator", "human", "--strategy", "oracle"],
        "unknown strategy 'oracle'",
    ),
    "cli: loop with a budget of 0": (
        lambda w: None,
        ["loop", "--dataset", "nmc", "--annotator", "human", "--budget", "0"],
        "budget 0: a round needs at least one slice",
    ),
    "cli: round by an unknown unit": (
        lambda w: None,
        ["round", "--dataset", "nmc", "--unit", "voxel"],
        "unit 'voxel': use one of slice, region",
    ),
    "cli: region round with a pixel budget of 0": (
        lambda w: None,
        ["round", "--dataset", "nmc", "--unit", "region", "--budget-px", "0"],
        "pixel budget 0: a round needs at least one labelled pixel",
    ),
    "cli: region round by a strategy of whole slices' particles": (
        lambda w: None,
        ["round", "--dataset", "nmc", "--unit", "region", "--strategy", "disagreement"],
        "use --unit slice with it",
    ),
    "cli: loop with regions of 0 pixels": (
        lambda w: None,
        ["loop", "--dataset", "nmc", "--annotator", "human", "--unit", "region", "--region", "0"],
        "region size 0: a region is at least 1 pixel",
    ),
    "cli: loop with truth that does not exist": (
        lambda w: None,
        ["loop", "--dataset", "nmc", "--truth", "nmc=missing.tif"],
        "missing.tif.*does not exist",
    ),
    "cli: loop with truth of another volume's shape": (
        lambda w: tifffile.imwrite(w / "small.tif", np.zeros((5, 8, 8), np.uint8)),
        ["loop", "--dataset", "nmc", "--truth", "nmc=small.tif"],
        r"--truth labels small.tif are \(5, 8, 8\)",
    ),
    "cli: loop with truth that misses the dataset's volume": (
        lambda w: None,
        ["loop", "--dataset", "nmc", "--truth", "ghost=labels.tif"],
        "no ground truth for volume\\(s\\) nmc",
    ),
}


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_stacks_and_arguments_are_refused_and_nothing_is_written(
    case, home, tmp_path, monkeypatch, electrode_volume
):
    prepare, args, message = CLI_CASES[case]
    _stacks(tmp_path, electrode_volume)
    prepare(tmp_path)
    inputs = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    said = " ".join(f"{result.output} {result.exception or ''}".split())
    assert isinstance(result.exception, TomoloopError | SystemExit), said
    assert "Traceback" not in result.output
    assert re.search(message, said), said
    assert _files(tmp_path) == inputs  # no output, no partial file


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    "config, message",
    [({"loss": "nosuch"}, "loss 'nosuch' is not one of"), ({"patch": 20}, "multiple of 16")],
)
def test_the_train_flow_refuses_bad_options_before_it_registers_anything(home, config, message):
    from tomoloop.flows.train import train_semantic

    with pytest.raises(TomoloopError, match=message):
        train_semantic(home.dataset("nmc").id, "unet", config={"epochs": 1, **config})


# Refused inside a Prefect flow: the command prints one line, as everywhere else (Prefect
# records the failed run on its server; its traceback and chatter stay off the terminal)
FLOW_CASES: dict[str, tuple[list[str], str, str]] = {
    "flow: ingest with an undeclared label value": (
        _ingest(phases="pore=0,nmc=1"),
        "labels.tif z=0 holds label values [2] that the phase map pore=0,nmc=1 does not declare",
        "StackValidationError",
    ),
    "flow: evaluate an unknown model": (
        ["evaluate", "--model", "99999", "--dataset", "nmc", "--device", "cpu"],
        "no model version with id 99999",
        "RegistryError",
    ),
    "flow: score with an unknown model": (
        ["score", "--model", "99999", "--volume", "1", "--device", "cpu"],
        "no model version with id 99999",
        "RegistryError",
    ),
}


def _flow_progress(line: str) -> bool:
    """A message of the flow itself (get_run_logger), e.g. ingest's "exporting COCO"."""
    return "| INFO    | Flow run '" in line


@pytest.mark.parametrize("case", list(FLOW_CASES))
def test_errors_inside_flows_are_one_line_and_json_with_json(
    case, home, tmp_path, monkeypatch, electrode_volume
):
    args, message, kind = FLOW_CASES[case]
    _stacks(tmp_path, electrode_volume)
    inputs = _files(tmp_path)
    prefect_api = {"PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's server
    result = subprocess.run(
        [sys.executable, "-m", "tomoloop.cli", *args, "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=os.environ | prefect_api,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert document["kind"] == kind and message in document["error"], document
    lines = [line for line in result.stderr.splitlines() if not _flow_progress(line)]
    assert lines == [f"error: {document['error']}"], result.stderr
    assert _files(tmp_path) == inputs


# ---------------------------------------------------------------- COCO files


def _coco(work: Path) -> Path:
    """A good one-image COCO document with its image; its path."""
    labels = np.zeros((48, 48), np.uint8)
    labels[5:15, 5:15] = labels[30:40, 20:30] = 1
    (work / "images").mkdir()
    tifffile.imwrite(work / "images" / "z.png", labels)
    document = coco_from_slices([labels], ["z.png"], ["pore", "particle"], [1])
    (work / "train.json").write_text(json.dumps(document))
    return work / "train.json"


def _edit(path: Path, change: Callable[[dict], object]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


COCO_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "coco: not JSON": (lambda p: p.write_text("{images: ["), "cannot be read as COCO JSON"),
    "coco: a JSON list": (lambda p: p.write_text("[]"), "not a COCO document"),
    "coco: path traversal": (
        lambda p: _edit(p, lambda d: d["images"][0].update(file_name="../../etc/passwd")),
        r"'\.\./\.\./etc/passwd'.*'\.\.' component",
    ),
    "coco: absolute image path": (
        lambda p: _edit(p, lambda d: d["images"][0].update(file_name="/etc/passwd")),
        "absolute",
    ),
    "coco: unknown category": (
        lambda p: _edit(p, lambda d: d["annotations"][0].update(category_id=9)),
        "category_id 9",
    ),
    "coco: annotation of a missing image": (
        lambda p: _edit(p, lambda d: d["annotations"][0].update(image_id=5)),
        "refers to image 5",
    ),
    "coco: image without file name": (
        lambda p: _edit(p, lambda d: d["images"][0].pop("file_name")),
        "file_name",
    ),
}


@pytest.mark.parametrize("case", list(COCO_CASES))
def test_bad_coco_files_are_refused_before_training(case, tmp_path):
    from tomoloop.adapters.detectron2 import training_records

    spoil, message = COCO_CASES[case]
    coco = _coco(tmp_path)
    spoil(coco)
    inputs = _files(tmp_path)
    with pytest.raises(TomoloopError, match=message):
        training_records(coco, tmp_path / "images")
    assert _files(tmp_path) == inputs


# ---------------------------------------------------------------- Label Studio annotations


def _brush(mask: np.ndarray) -> list[dict]:
    return brush_results(mask, NAMES)


def _unknown_label(results: list[dict]) -> list[dict]:
    results[0]["value"]["brushlabels"] = ["dust"]
    return results


def _truncated_rle(results: list[dict]) -> list[dict]:
    results[0]["value"]["rle"] = results[0]["value"]["rle"][:9]
    return results


ANNOTATION_CASES: dict[str, tuple[Callable[[np.ndarray], list[dict]], str, str]] = {
    "labelstudio: unknown label": (
        lambda m: _unknown_label(_brush(m)),
        "slice",
        "'dust'.*not one of the phases",
    ),
    "labelstudio: truncated RLE": (
        lambda m: _truncated_rle(_brush(m)),
        "slice",
        "RLE does not decode",
    ),
    "labelstudio: mask of another size": (
        lambda m: _brush(m[:-1]),
        "slice",
        r"does not decode to a 40×48 mask",
    ),
    "labelstudio: task of another tool": (_brush, "other", "names no tomoloop slice"),
    "labelstudio: review that does not exist": (_brush, "review", "no review with id 424242"),
}
TASK_KEYS = {"slice": "slice-{}:round-0", "other": "image-17", "review": "slice-{}:review-424242"}


@pytest.mark.parametrize("case", list(ANNOTATION_CASES))
def test_bad_annotations_are_rejected_with_a_recorded_reason(case, home, electrode_volume):
    make, key, reason = ANNOTATION_CASES[case]
    slice_id = home.register_slices(home.volumes()[0].id, "z", [3])[3]
    annotation_id = 9000 + list(ANNOTATION_CASES).index(case)
    pulled = PulledAnnotation(
        task_id=annotation_id,
        task_key=TASK_KEYS[key].format(slice_id),
        annotation_id=annotation_id,
        result=make(electrode_volume[3]),
        was_cancelled=False,
        lead_time_s=3.0,
        author="1",
        updated_at="2026-11-30T04:00:00Z",
    )
    assert handle_annotation(home, Intake("nmc", NAMES, 1), pulled, "poll") == "rejected"
    (event,) = [e for e in home.ls_events() if e.ls_annotation_id == annotation_id]
    assert event.status == "rejected" and event.annotation_id is None
    assert re.search(reason, event.reason), event.reason


# ---------------------------------------------------------------- webhook bodies


def _webhook(task_key: str = "slice-1:round-0", title: str = project_title("nmc")) -> dict:
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": 1, "result": [], "updated_at": "2026-11-30T04:00:00Z"},
        "task": {"id": 1, "data": {"key": task_key}},
        "project": {"id": 1, "title": title},
    }


WEBHOOK_CASES: dict[str, tuple[dict, object, int, str]] = {
    "webhook: body not JSON": ({"content": b"action=ANNOTATION_CREATED"}, None, 422, "JSON"),
    "webhook: body a JSON list": ({"json": [_webhook()]}, None, 422, "dict|object"),
    "webhook: no task": (
        {"json": {k: v for k, v in _webhook().items() if k != "task"}},
        None,
        422,
        "lacks 'task'",
    ),
    "webhook: annotation id not a number": (
        {"json": {**_webhook(), "annotation": {"id": "first"}}},
        None,
        422,
        "malformed.*'first'.*integer id",
    ),
    "webhook: unknown dataset": (
        {"json": _webhook(title=project_title("ghost"))},
        None,
        404,
        "no dataset 'ghost'.*registry datasets",
    ),
    "webhook: wrong secret": ({"json": _webhook()}, "guess", 401, "X-Tomoloop-Secret"),
}


@pytest.mark.parametrize("case", list(WEBHOOK_CASES))
def test_bad_webhook_bodies_are_refused_and_nothing_is_recorded(case, home):
    body, secret, status, message = WEBHOOK_CASES[case]
    client = TestClient(create_app(Settings(webhook_secret=SECRET)))
    events = len(home.ls_events())
    answer = client.post(
        "/webhooks/labelstudio",
        headers={"X-Tomoloop-Secret": secret or SECRET, "Content-Type": "application/json"},
        **body,
    )
    assert answer.status_code == status, answer.text
    assert re.search(message, answer.text), answer.text
    assert len(home.ls_events()) == events


@pytest.mark.usefixtures("prefect_harness")
def test_retrain_refuses_a_bad_device_before_it_freezes_a_dataset_version(
    tmp_path, monkeypatch, ingest_electrode, electrode_volume
):
    """A new label waits, so a retrain would freeze v2 first: a bad --device must not."""
    from tomoloop.db.models import Tier
    from tomoloop.db.registry import NewAnnotation

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", url)
    ingest_electrode(tmp_path, electrode_volume)
    registry = Registry.from_url(url)
    first = registry.dataset_slices(registry.dataset("nmc").id)[0]
    slice_id = registry.annotation(first.annotation_id).slice_id
    registry.add_annotations([NewAnnotation(slice_id, Tier.ANNOTATOR, "ls:1/1@t")])
    result = CliRunner().invoke(app, ["retrain", "--dataset", "nmc", "--device", "gpu"])
    assert isinstance(result.exception, TomoloopError)
    assert "unknown device 'gpu'" in str(result.exception)
    assert [d.version for d in registry.datasets()] == [1]
    assert not (tmp_path / "home" / "runs").exists()


# ---------------------------------------------------------------- faults


def _big_stacks(work: Path) -> None:
    """A gray/labels pair whose COCO export takes seconds (the kill lands inside it)."""
    rng = np.random.default_rng(0)
    labels = (rng.random((48, 256, 256)) < 0.02).astype(np.uint8)  # scattered particles
    tifffile.imwrite(work / "labels.tif", labels)
    tifffile.imwrite(work / "gray.tif", (labels * 80 + 20).astype(np.uint8))


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow  # > 20 s
@pytest.mark.usefixtures("prefect_harness")
def test_a_killed_ingest_leaves_no_process_and_its_scratch_goes_with_the_next_run(tmp_path):
    from tomoloop.db.engine import make_engine, upgrade

    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    upgrade(make_engine(url))
    _big_stacks(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own server
    env |= {"TOMOLOOP_HOME": str(home), "TOMOLOOP_DATABASE_URL": url}
    command = [sys.executable, "-m", "tomoloop.cli", *_ingest()]
    cli = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    scratch = home / "tmp"
    try:
        for _ in range(3000):  # the server is up and the ingest is writing its scratch
            children = psutil.Process(cli.pid).children(recursive=True)
            server = any("uvicorn" in " ".join(c.cmdline()) for c in children if _running(c))
            if server and scratch.is_dir() and any(scratch.iterdir()):
                break
            assert cli.poll() is None, "the ingest ended before it could be killed"
            time.sleep(0.1)
        cli.kill()  # kill -9
        cli.wait()
        left = list(scratch.iterdir())
        assert [p.name.split("@")[2] for p in left] == [str(cli.pid)]
        for _ in range(100):
            if not any(_running(c) for c in children):
                break
            time.sleep(0.1)
        assert not [c.pid for c in children if _running(c)], "children outlived the command"
    finally:
        for child in children:
            if _running(child):
                child.kill()
    again = subprocess.run(
        command,
        cwd=tmp_path, env=env | {"PREFECT_API_URL": PREFECT_API_URL.value()},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert not left[0].exists() and not list(scratch.iterdir())
