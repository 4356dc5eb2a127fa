"""Shared fixtures: small synthetic stacks written to tmp folders (never committed binaries)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid

import numpy as np
import pytest

# Prefect offline and quiet; its temporary server may take long to migrate the first time
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
if "PREFECT_HOME" not in os.environ:  # the session's own, removed when the session ends
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tomoloop-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)

# Prefect sets up its logging (console handlers bound to the sys.stderr of the moment) when
# ``prefect.main`` is first imported. Imported first inside a CliRunner invocation (commands
# import flows lazily), the handlers would keep that invocation's buffer, closed after it,
# and every later flow's log line would print "--- Logging error ---" with a traceback into
# the next command's output. A user's process sets it up with the real stderr; so does the
# test session, here.
import prefect.main  # noqa: F401


def balls(shape: tuple[int, int, int], centres, radii) -> np.ndarray:
    """uint8 (z, y, x) volume with value 1 inside each ball."""
    zz, yy, xx = np.indices(shape)
    volume = np.zeros(shape, dtype=np.uint8)
    for (cz, cy, cx), r in zip(centres, radii, strict=True):
        volume[(zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return volume


def electrode_labels() -> np.ndarray:
    """(20, 40, 48) uint8 labels: pore 0, two separate particles 1, a carbon-binder slab 2."""
    volume = balls((20, 40, 48), [(10, 12, 12), (10, 26, 34)], [7, 8])
    volume[:, 36:, :] = np.where(volume[:, 36:, :] == 0, 2, volume[:, 36:, :])
    return volume


@pytest.fixture
def electrode_volume() -> np.ndarray:
    """A fresh :func:`electrode_labels` volume (tests may change it)."""
    return electrode_labels()


@pytest.fixture(scope="module")
def ingested_home(tmp_path_factory, prefect_harness):
    """(home, environment) of a SQLite registry holding the electrode as dataset ``nmc``,
    shared by a module's tests (which must leave it as they found it).
    """
    from tomoloop.db.engine import make_engine, upgrade

    home = tmp_path_factory.mktemp("home")
    env = {"TOMOLOOP_HOME": str(home), "TOMOLOOP_DATABASE_URL": f"sqlite:///{home / 'r.sqlite'}"}
    engine = make_engine(env["TOMOLOOP_DATABASE_URL"])
    upgrade(engine)
    engine.dispose()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        folder = home / "stacks"
        folder.mkdir()
        _ingest_electrode(folder, electrode_labels())
    return home, env


@pytest.fixture
def ingest_electrode():
    """A function ``(folder, volume, noise=0.0, name="nmc")`` ingesting an electrode."""
    return _ingest_electrode


def _ingest_electrode(folder, volume: np.ndarray, noise: float = 0.0, name: str = "nmc") -> dict:
    """Write ``volume`` (labels) and a grey version of it (×80 + 20, optional Gaussian
    noise of σ ``noise``) as TIFFs in ``folder`` and ingest them as dataset ``name``
    (pore=0,nmc=1,cbd=2; split 0.6/0.2/0.2) into the registry of the environment; the
    ingest flow's result.
    """
    import tifffile

    from tomoloop.flows.ingest import ingest

    grey = volume * 80.0 + 20 + np.random.default_rng(0).normal(0, noise, volume.shape)
    tifffile.imwrite(folder / "gray.tif", np.clip(grey, 0, 255).astype(np.uint8))
    tifffile.imwrite(folder / "labels.tif", volume)
    return ingest(
        gray=str(folder / "gray.tif"),
        labels=str(folder / "labels.tif"),
        name=name,
        phases="pore=0,nmc=1,cbd=2",
        split=(0.6, 0.2, 0.2),
    )


# ---------------------------------------------------------------- registry backends


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole test session; yields a URL template."""
    from tomoloop.adapters.local_postgres import local_postgres

    with local_postgres() as template:
        yield template


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path):
    """A migrated, empty registry on each backend."""
    from tomoloop.db.engine import make_engine, upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
        upgrade(make_engine(url))
        yield url
        return
    from tomoloop.adapters.local_postgres import create_database, drop_database

    template = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = create_database(template, name)
    engine = make_engine(url)
    upgrade(engine)
    yield url
    engine.dispose()
    drop_database(template, name)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the session (flows run for real, no server needed)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# ---------------------------------------------------------------- Label Studio


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real local Label Studio server for the whole session (its virtualenv cached in
    ~/.cache/tomoloop between runs); yields the LocalLabelStudio that runs it.
    """
    from tomoloop.adapters.labelstudio_server import LocalLabelStudio

    server = LocalLabelStudio(tmp_path_factory.mktemp("ls-home"), port=_free_port())
    server.up()
    yield server
    server.down()


@pytest.fixture
def label_studio_env(tmp_path, monkeypatch, label_studio):
    """A fresh migrated SQLite registry and a home in tmp_path, pointed at the session's
    Label Studio through the environment (as in production); yields the registry URL.
    """
    from tomoloop.db.engine import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    ls_url, token = label_studio.credentials()
    for key, value in {
        "TOMOLOOP_HOME": str(tmp_path / "home"),
        "TOMOLOOP_DATABASE_URL": url,
        "TOMOLOOP_LABEL_STUDIO_URL": ls_url,
        "TOMOLOOP_LABEL_STUDIO_TOKEN": token,
        "TOMOLOOP_LABEL_STUDIO_FILES": str(label_studio.files_root / "media"),
    }.items():
        monkeypatch.setenv(key, value)
    return url


@pytest.fixture
def serve_http():
    """A function ``(backend=False, on_train=None, **env) -> URL`` serving tomoloop's HTTP
    app (built from the environment at the call, plus ``env``; with ``backend``, the ML
    backend of every dataset, its champion predicting on the CPU, and ``on_train`` called
    when Label Studio asks it to train) with uvicorn on a free loopback port; every server
    started is stopped at teardown.
    """
    import threading
    import time

    import torch
    import uvicorn

    from tomoloop.adapters.http import create_app
    from tomoloop.config import Settings
    from tomoloop.services import ChampionBackend, Services

    servers, opened = [], []

    def serve(backend: bool = False, on_train=None, **env: str) -> str:
        port = _free_port()
        settings = Settings(**env)
        predictions = None
        if backend:
            opened.append(Services.from_settings(settings))
            predictions = ChampionBackend(opened[-1], torch.device("cpu"))
        app = create_app(settings, predictions=predictions, on_train=on_train)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        while not server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)
    for services in opened:
        services.close()


@pytest.fixture
def label_studio_postgres(label_studio_env, postgres_server, monkeypatch):
    """As ``label_studio_env`` but the registry is a fresh migrated PostgreSQL database;
    yields its URL.
    """
    from tomoloop.adapters.local_postgres import create_database, drop_database
    from tomoloop.db.engine import make_engine, upgrade

    name = f"t_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_server, name)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", url)
    yield url
    drop_database(postgres_server, name)


# ---------------------------------------------------------------- S3


S3_BUCKET = "tomoloop-test"


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on a free loopback port for the
    whole session, holding the empty bucket :data:`S3_BUCKET`; yields its endpoint URL."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="tomoloop-test",
        aws_secret_access_key="tomoloop-test",
        region_name="us-east-1",
    ).create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The environment pointed at the session's S3 server the way users configure S3
    (``AWS_ENDPOINT_URL`` + credentials); yields ``.client`` (boto3, to look at the
    bucket behind tomoloop's back) and ``.bucket``."""
    from types import SimpleNamespace

    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "tomoloop-key-id",
        "AWS_SECRET_ACCESS_KEY": "tomoloop-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    return SimpleNamespace(client=boto3.client("s3"), bucket=S3_BUCKET)
