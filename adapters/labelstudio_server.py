"""A local Label Studio server for the embedded default (``tomoloop labelstudio up``).

Label Studio pins Django, its own SDK and logging libraries that clash with Prefect, so it
lives in its own virtualenv (cached between runs, by default under
``~/.cache/tomoloop``). The server binds 127.0.0.1, keeps its data under
``$TOMOLOOP_HOME/labelstudio/data``, and is started non-interactively with an admin user
and an API token generated here. URL and token are recorded in
``$TOMOLOOP_HOME/labelstudio/server.json`` (mode 0600), where tomoloop reads them when
``TOMOLOOP_LABEL_STUDIO_URL`` / ``TOMOLOOP_LABEL_STUDIO_TOKEN`` are not set. The token is
never printed or logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tomoloop.errors import TomoloopError

VERSION = "1.23.2"  # the server checked in FACTS.md (label-studio-sdk 2.1.2 beside it)
ADMIN = "admin@tomoloop.local"


class LabelStudioServerError(TomoloopError):
    """The local Label Studio server could not be installed, started or stopped."""


@dataclass(frozen=True)
class ServerInfo:
    """What ``status`` reports (no secrets)."""

    running: bool
    url: str | None
    pid: int | None
    data_dir: str
    venv: str
    log: str


def default_venv() -> Path:
    """Where the Label Studio virtualenv is cached (``TOMOLOOP_LABEL_STUDIO_VENV``)."""
    configured = os.environ.get("TOMOLOOP_LABEL_STUDIO_VENV")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "tomoloop" / f"label-studio-{VERSION}"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as response:
            return json.loads(response.read()).get("status") == "UP"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalLabelStudio:
    """Install, start, stop and report a Label Studio server under ``home/labelstudio``."""

    def __init__(self, home: Path, venv: Path | None = None, port: int = 8080) -> None:
        self.root = Path(home) / "labelstudio"
        self.venv = venv or default_venv()
        self.port = port
        self.data_dir = self.root / "data"
        # The only folder Label Studio may serve files from: never the one holding the
        # token file or its database.
        self.files_root = self.root / "files"
        self.state_file = self.root / "server.json"
        self.log_file = self.root / "server.log"

    # ---------------------------------------------------------------- install

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "label-studio"

    def install(self) -> None:
        """Create the virtualenv and install Label Studio into it (skipped when present)."""
        stamp = self.venv / f".tomoloop-label-studio-{VERSION}"
        if stamp.exists() and self.executable.exists():
            return
        self.venv.parent.mkdir(parents=True, exist_ok=True)
        steps = (
            [sys.executable, "-m", "venv", str(self.venv)],
            [str(self.venv / "bin" / "pip"), "install", "-qq", f"label-studio=={VERSION}"],
        )
        for command in steps:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise LabelStudioServerError(
                    f"installing Label Studio failed ({' '.join(command[:3])} …): "
                    f"{done.stderr.strip()[-800:]} — check the network and disk space, "
                    f"or remove {self.venv} and try again"
                )
        stamp.touch()

    # ---------------------------------------------------------------- state

    def _state(self) -> dict | None:
        if not self.state_file.exists():
            return None
        return json.loads(self.state_file.read_text())

    def _write_state(self, state: dict) -> None:
        write_private_json(self.state_file, state)

    def credentials(self) -> tuple[str, str]:
        """(url, token) of the local server, as recorded by :meth:`up`."""
        state = self._state()
        if state is None:
            raise LabelStudioServerError(
                "no local Label Studio: run `tomoloop labelstudio up`, or set "
                "TOMOLOOP_LABEL_STUDIO_URL and TOMOLOOP_LABEL_STUDIO_TOKEN"
            )
        return state["url"], state["token"]

    def status(self) -> ServerInfo:
        state = self._state() or {}
        pid = state.get("pid")
        url = state.get("url")
        running = bool(pid and alive(pid) and url and healthy(url))
        return ServerInfo(
            running,
            url,
            pid if running else None,
            str(self.data_dir),
            str(self.venv),
            str(self.log_file),
        )

    # ---------------------------------------------------------------- up / down

    def up(self, timeout: float = 300.0) -> ServerInfo:
        """Install if needed, start the server and wait for ``/health``; idempotent."""
        current = self.status()
        if current.running:
            return current
        self.install()
        if not port_free(self.port):
            raise LabelStudioServerError(
                f"port {self.port} on 127.0.0.1 is taken: stop what uses it or pass --port"
            )
        state = self._state() or {}
        token = state.get("token") or secrets.token_hex(20)
        password = state.get("password") or secrets.token_urlsafe(18)
        url = f"http://127.0.0.1:{self.port}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": ADMIN,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(self.files_root),
            "SSRF_PROTECTION_ENABLED": "false",
            "ML_BLOCK_LOCAL_IP": "false",
            "LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        }
        command = [
            str(self.executable),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._write_state({"pid": process.pid, "url": url, "token": token, "password": password})
        try:
            code = await_health(process, url, timeout)
        except TimeoutError:
            self.down()
            raise LabelStudioServerError(
                f"Label Studio did not answer {url}/health within {timeout:.0f} s: see "
                f"{self.log_file}"
            ) from None
        if code is not None:
            raise LabelStudioServerError(
                f"Label Studio exited with code {code} while starting: see {self.log_file}"
            )
        return self.status()

    def down(self, timeout: float = 30.0) -> int | None:
        """Stop the server (its whole process group); the pid it stopped, or None when it
        was not running."""
        state = self._state()
        pid = state.get("pid") if state else None
        stopped = pid if pid and stop_group(pid, b"label-studio", timeout) else None
        if state:
            self._write_state({**state, "pid": None})
        return stopped


def await_health(
    process: subprocess.Popen, url: str, timeout: float, poll_s: float = 1.0
) -> int | None:
    """Poll ``url``'s ``/health`` until it answers UP (None) or ``process`` ends first
    (its exit code).

    Raises:
        TimeoutError: neither within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return process.returncode
        if healthy(url):
            return None
        time.sleep(poll_s)
    raise TimeoutError(f"{url}/health did not answer within {timeout:.0f} s")


def write_private_json(path: Path, document: dict) -> None:
    """``document`` as JSON at ``path`` (mode 0600, written to a temporary name and
    renamed; the folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(document, f)
    os.replace(temp, path)


def stop_group(pid: int, marker: bytes, timeout: float = 30.0) -> bool:
    """Stop the process group led by ``pid`` (SIGTERM, SIGKILL after ``timeout`` s) if
    ``pid`` is alive and its command line holds ``marker``; whether it did (a no-op
    otherwise)."""
    if not (alive(pid) and _leads_group_of(pid, marker)):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)
    return True


def _leads_group_of(pid: int, marker: bytes) -> bool:
    """Whether ``pid`` leads its own process group and its command line holds ``marker``
    (after a reboot the recorded pid may belong to something else, which must not be
    signalled).
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return marker in cmdline and os.getpgid(pid) == pid
    except (OSError, ProcessLookupError):
        return False


def _reap(pid: int) -> None:
    """Collect a finished child so it does not linger as a zombie (alive to os.kill)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def label_studio_credentials(settings) -> tuple[str, str]:
    """(url, token) of the Label Studio server to use: ``TOMOLOOP_LABEL_STUDIO_URL`` with
    ``TOMOLOOP_LABEL_STUDIO_TOKEN`` or, for Prefect workers, the Prefect Secret block named
    by ``TOMOLOOP_LABEL_STUDIO_TOKEN_BLOCK``; otherwise the local server's.
    """
    if not settings.label_studio_url:
        return LocalLabelStudio(settings.home).credentials()
    url = settings.label_studio_url.rstrip("/")
    if settings.label_studio_token is not None:
        return url, settings.label_studio_token.get_secret_value()
    if settings.label_studio_token_block:
        return url, _secret_block(settings.label_studio_token_block)
    raise LabelStudioServerError(
        "TOMOLOOP_LABEL_STUDIO_URL is set but TOMOLOOP_LABEL_STUDIO_TOKEN is not: give the "
        "token of a user on that server, or name a Prefect Secret block holding it in "
        "TOMOLOOP_LABEL_STUDIO_TOKEN_BLOCK"
    )


def _secret_block(name: str) -> str:
    """The value of the Prefect Secret block ``name`` (read from the Prefect API)."""
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(name).get())
    except ValueError as exc:
        raise LabelStudioServerError(
            f"Prefect Secret block {name!r} cannot be read ({exc}): create it with "
            f"Secret(value=TOKEN).save({name!r}) on the Prefect server the workers use"
        ) from exc
