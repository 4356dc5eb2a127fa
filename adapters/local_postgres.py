"""A private PostgreSQL server in a temporary folder (tests, benchmarks, local trials).

PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` user, in
a folder of its own directly under the system temp dir.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tomoloop.errors import TomoloopError


def server_program(name: str) -> str:
    """Path of a PostgreSQL server program (``initdb``, ``pg_ctl``)."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise TomoloopError(
            f"PostgreSQL server program {name!r} not found: install the PostgreSQL server "
            "(Debian: apt-get install postgresql)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def local_postgres(user: str = "tomoloop") -> Iterator[str]:
    """Start a throw-away server; yield a URL template with ``{db}`` for the database name.

    The server trusts local connections, keeps no fsync (speed over durability: for tests
    and benchmarks only) and is stopped and deleted on exit.
    """
    data = Path(tempfile.mkdtemp(prefix="tomoloop-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, text=True)

    try:
        run(
            server_program("initdb"), "-D", str(data / "db"), "-A", "trust", "-U", user, "--no-sync"
        )
        run(
            server_program("pg_ctl"),
            "-D",
            str(data / "db"),
            "-w",
            "-l",
            str(data / "log"),
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        try:
            yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/{{db}}"
        finally:
            run(server_program("pg_ctl"), "-D", str(data / "db"), "-m", "fast", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)


def create_database(template: str, name: str) -> str:
    """Create database ``name`` on the server of a ``local_postgres`` URL template; its URL."""
    from sqlalchemy import create_engine, text

    admin = create_engine(template.format(db="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return template.format(db=name)


def drop_database(template: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(template.format(db="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
