"""Shared fixtures: small synthetic stacks written to tmp folders (never committed binaries)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# Prefect offline and quiet; its temporary server may take long to migrate the first time
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tomoloop-prefect-"))
SHARED_DATA = REPO.parent / "shared" / "data"


def balls(shape: tuple[int, int, int], centres, radii) -> np.ndarray:
    """uint8 (z, y, x) volume with value 1 inside each ball."""
    zz, yy, xx = np.indices(shape)
    volume = np.zeros(shape, dtype=np.uint8)
    for (cz, cy, cx), r in zip(centres, radii, strict=True):
        volume[(zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return volume


@pytest.fixture
def electrode_volume() -> np.ndarray:
    """(20, 40, 48) uint8 labels: pore 0, two separate particles 1, a carbon-binder slab 2."""
    volume = balls((20, 40, 48), [(10, 12, 12), (10, 26, 34)], [7, 8])
    volume[:, 36:, :] = np.where(volume[:, 36:, :] == 0, 2, volume[:, 36:, :])
    return volume


@pytest.fixture
def shared_data() -> Path:
    """The reference volumes beside the repo (../shared/data); skips where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference volumes not found at {SHARED_DATA}")
    return SHARED_DATA


# ---------------------------------------------------------------- registry backends


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL server program {name!r} not found: install the PostgreSQL server "
            "(Debian: apt-get install postgresql) — `make test` does this when run as root"
        )
    return found


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole test session; yields a URL template.

    PostgreSQL refuses to run as root: as root it runs as the ``postgres`` user, in a
    folder of its own directly under the system temp dir (pytest's is root-only).
    """
    data = Path(tempfile.mkdtemp(prefix="tomoloop-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = partial(subprocess.run, check=True, capture_output=True, text=True)
    run(
        [
            *as_postgres,
            _postgres_bin("initdb"),
            "-D",
            str(data / "db"),
            "-A",
            "trust",
            "-U",
            "tomoloop",
            "--no-sync",
        ]
    )
    run(
        [
            *as_postgres,
            _postgres_bin("pg_ctl"),
            "-D",
            str(data / "db"),
            "-w",
            "-l",
            str(data / "log"),
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ]
    )
    try:
        yield f"postgresql+psycopg://tomoloop@127.0.0.1:{port}/{{db}}"
    finally:
        run([*as_postgres, _postgres_bin("pg_ctl"), "-D", str(data / "db"), "-m", "fast", "stop"])


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path):
    """A migrated, empty registry on each backend."""
    from sqlalchemy import create_engine, text

    from tomoloop.db.engine import make_engine, upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
        upgrade(make_engine(url))
        yield url
        return
    template = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(template.format(db="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = template.format(db=name)
    engine = make_engine(url)
    upgrade(engine)
    yield url
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the session (flows run for real, no server needed)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
