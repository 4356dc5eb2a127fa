"""Artifacts and stacks at ``s3://`` URLs, against a real S3-compatible server (moto's
server mode on loopback, started once per session by ``tests/conftest.py::s3_server``),
configured as users configure S3: ``TOMOLOOP_ARTIFACTS_URL`` and the ``AWS_*`` variables."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
import uuid
import zipfile

import fsspec
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from tomoloop.adapters.artifacts import ArtifactError, ArtifactStore
from tomoloop.cli import app
from tomoloop.db.registry import Registry
from tomoloop.errors import StackReadError
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.remote import REMOTE_BLOCK_BYTES
from tomoloop.stacks.tiff import write_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix per test: tests share the session's bucket."""
    return f"t-{uuid.uuid4().hex[:12]}"


def _objects(s3, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``, read with boto3 (not through tomoloop)."""
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])
    return {
        o["Key"]: s3.client.get_object(Bucket=s3.bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }


@pytest.mark.usefixtures("prefect_harness")
def test_ingest_stores_its_coco_artifact_in_the_bucket(
    s3_env, prefix, tmp_path, monkeypatch, electrode_volume
):
    url = f"s3://{s3_env.bucket}/{prefix}/artifacts"
    registry_url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    monkeypatch.setenv("TOMOLOOP_ARTIFACTS_URL", url)
    tifffile.imwrite(tmp_path / "gray.tif", (electrode_volume * 80 + 20).astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", electrode_volume)

    result = CliRunner().invoke(
        app,
        [
            "ingest", str(tmp_path / "gray.tif"), "--labels", str(tmp_path / "labels.tif"),
            "--name", "nmc", "--phases", "pore=0,nmc=1,cbd=2", "--json",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "tomoloop-secret-key" not in result.output
    coco = Registry.from_url(registry_url).dataset("nmc").artifacts["coco"]
    answer = json.loads(result.stdout.strip().splitlines()[-1])  # after Prefect's log lines
    assert coco["uri"] == answer["coco_artifact"]
    objects = _objects(s3_env, prefix)
    assert list(objects) == [f"{prefix}/artifacts/{coco['uri']}"]  # no temporary left
    stored = objects[f"{prefix}/artifacts/{coco['uri']}"]
    assert hashlib.sha256(stored).hexdigest() == coco["sha256"]
    with zipfile.ZipFile(io.BytesIO(stored)) as archive:
        names = archive.namelist()
    assert any(n.endswith(".json") for n in names) and any(n.endswith(".png") for n in names)
    assert not (tmp_path / "home" / "artifacts").exists()  # nothing went to the local store


def test_artifacts_round_trip_and_an_altered_object_is_refused(s3_env, prefix, tmp_path):
    store = ArtifactStore(f"s3://{s3_env.bucket}/{prefix}")
    data = bytes(range(256)) * 300
    put = store.put_bytes(data, ".bin")
    assert put.new and store.get_bytes(put.key, put.sha256) == data
    (tmp_path / "c.pt").write_bytes(data)
    assert store.put_file(tmp_path / "c.pt", ".bin") == put  # same content, same key
    before = store.entries()
    time.sleep(1.1)  # S3 times are whole seconds
    again = store.put_bytes(data, ".bin")
    assert not again.new
    after = store.entries()
    assert [e.key for e in after] == [put.key] == [e.key for e in before]
    assert after[0].mtime > before[0].mtime  # stored again: fresh for `db gc`

    key = f"{prefix}/{put.key}"
    s3_env.client.put_object(Bucket=s3_env.bucket, Key=key, Body=data[:-1] + b"\x00")
    with pytest.raises(ArtifactError, match="was altered"):
        store.get_bytes(put.key, put.sha256)
    s3_env.client.delete_object(Bucket=s3_env.bucket, Key=key)
    with pytest.raises(ArtifactError, match="is missing"):
        store.get_bytes(put.key, put.sha256)


class _GetBytes:
    """Counts GetObject requests to the S3 server and the bytes it sent back."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    def __call__(self, parsed: dict, **_: object) -> None:
        self.requests += 1
        self.bytes += int(parsed.get("ContentLength", 0))


def test_a_stack_on_s3_is_read_slice_by_slice_in_byte_ranges(s3_env, prefix, tmp_path):
    volume = np.random.default_rng(0).integers(0, 60000, (32, 128, 160), dtype=np.uint16)
    local = write_stack(tmp_path / "gray.tif", volume, (0.5, 0.25, 0.25))
    key = f"{prefix}/gray.tif"
    s3_env.client.upload_file(str(local), s3_env.bucket, key)
    size = local.stat().st_size
    fs = fsspec.filesystem("s3")  # the instance open_stack gets (fsspec caches them)
    fs.connect()
    fetched = _GetBytes()
    fs.s3.meta.events.register("after-call.s3.GetObject", fetched)
    try:
        with open_stack(f"s3://{s3_env.bucket}/{key}") as stack:
            assert (stack.shape, stack.dtype, stack.voxel_size) == (
                volume.shape,
                np.dtype(np.uint16),
                (0.5, 0.25, 0.25),
            )
            opened = fetched.bytes
            np.testing.assert_array_equal(stack.slice("z", 17), volume[17])
            slice_bytes = fetched.bytes - opened
            assert fetched.bytes < size / 4  # one slice of 32: far from the whole object
            assert slice_bytes <= volume[17].nbytes + REMOTE_BLOCK_BYTES  # its page + read-ahead
            np.testing.assert_array_equal(stack.slice("x", 5), volume[:, :, 5])
    finally:
        fs.s3.meta.events.unregister("after-call.s3.GetObject", fetched)
    assert fetched.requests > 1


def test_a_missing_stack_on_s3_is_one_clear_error(s3_env, prefix):
    with pytest.raises(StackReadError, match=f"stack s3://{s3_env.bucket}/{prefix}/no.tif does"):
        open_stack(f"s3://{s3_env.bucket}/{prefix}/no.tif")


def _upload(s3, prefix: str, name: str, volume: np.ndarray, local_dir) -> tuple[str, str]:
    """Write ``volume`` as a TIFF in ``local_dir`` and upload it: (its URL, its sha256)."""
    local = write_stack(local_dir / name, volume, (0.5, 0.25, 0.25))
    s3.client.upload_file(str(local), s3.bucket, f"{prefix}/{name}")
    return f"s3://{s3.bucket}/{prefix}/{name}", hashlib.sha256(local.read_bytes()).hexdigest()


def test_stack_info_reads_a_stack_at_an_s3_url_through_the_cli(s3_env, prefix, tmp_path):
    volume = np.random.default_rng(1).integers(0, 255, (6, 20, 24), dtype=np.uint8)
    url, _ = _upload(s3_env, prefix, "scan.tif", volume, tmp_path)

    result = CliRunner().invoke(app, ["stack", "info", url, "--json"])

    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["source"] == url  # the URL kept whole, not collapsed to s3:/bucket
    assert (info["shape_zyx"], info["dtype"], info["voxel_size_um"]) == (
        [6, 20, 24],
        "uint8",
        [0.5, 0.25, 0.25],
    )


def test_a_stack_at_an_s3_url_in_another_format_is_one_clear_line(s3_env, prefix):
    url = f"s3://{s3_env.bucket}/{prefix}/scan.h5"

    done = subprocess.run(  # the command as a process: exit status and output as users see
        [sys.executable, "-m", "tomoloop.cli", "stack", "info", url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error.startswith(f"stack {url}: only TIFF stacks (.tif, .tiff, .btf) are read from URLs")
    assert "Traceback" not in done.stderr


@pytest.mark.usefixtures("prefect_harness")
def test_ingest_and_coco_read_their_stacks_from_s3_urls(
    s3_env, prefix, tmp_path, monkeypatch, electrode_volume
):
    registry_url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", registry_url)
    gray = (electrode_volume * 80 + 20).astype(np.uint8)
    gray_url, gray_sha = _upload(s3_env, prefix, "gray.tif", gray, tmp_path)
    labels_url, _ = _upload(s3_env, prefix, "labels.tif", electrode_volume, tmp_path)
    runner = CliRunner()

    ingested = runner.invoke(
        app,
        ["ingest", gray_url, "--labels", labels_url, "--name", "s3scan",
         "--phases", "pore=0,nmc=1,cbd=2", "--json"],
    )  # fmt: skip

    assert ingested.exit_code == 0, ingested.output
    volume = Registry.from_url(registry_url).volume_named("s3scan")
    assert (volume.path, volume.sha256) == (gray_url, gray_sha)  # the object's own sha256
    assert (volume.shape_z, volume.shape_y, volume.shape_x) == gray.shape

    from_s3, local = tmp_path / "coco-s3", tmp_path / "coco-local"
    for labels, out in ((labels_url, from_s3), (str(tmp_path / "labels.tif"), local)):
        done = runner.invoke(
            app,
            ["coco", "from-stack", "--labels", labels, "--out", str(out),
             "--phases", "pore=0,nmc=1,cbd=2", "--json"],
        )  # fmt: skip
        assert done.exit_code == 0, done.output
    files = _files(local)
    assert files and files == _files(from_s3)
    for name in files:  # the same instances, whatever the stack was read from
        if name.suffix != ".json":
            assert (from_s3 / name).read_bytes() == (local / name).read_bytes(), name
            continue
        remote, here = (
            json.loads((from_s3 / name).read_text()),
            json.loads((local / name).read_text()),
        )
        assert remote["info"].pop("labels") == labels_url  # where it was read from
        here["info"].pop("labels")
        assert remote == here, name


def _files(folder) -> list:
    """Every file under ``folder``, relative to it, sorted."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
