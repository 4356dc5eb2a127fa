"""tomoloop's HTTP app (``tomoloop serve-api``) as a background server, so that Label Studio
keeps reaching the ML backend after the command that started it ends (``tomoloop demo``,
``tomoloop serve-api --background``); ``tomoloop serve-api --stop`` stops it.

The server runs in a session of its own on 127.0.0.1, with the environment of the command
that started it; its pid and URL are recorded in ``$TOMOLOOP_HOME/api/server.json`` and
its log goes to ``$TOMOLOOP_HOME/api/server.log``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tomoloop.adapters.labelstudio_server import (
    alive,
    await_health,
    healthy,
    port_free,
    stop_group,
    write_private_json,
)
from tomoloop.errors import TomoloopError

MARKER = b"serve-api"  # in the command line of the server process


class ApiServerError(TomoloopError):
    """The background HTTP app could not be started."""


class LocalApi:
    """Start, find and stop the background HTTP app of ``home``."""

    def __init__(self, home: Path, port: int = 8700) -> None:
        self.root = Path(home) / "api"
        self.port = port
        self.state_file = self.root / "server.json"
        self.log_file = self.root / "server.log"

    def running_url(self) -> str | None:
        """The URL of the background app if it runs and answers ``/health``."""
        if not self.state_file.exists():
            return None
        state = json.loads(self.state_file.read_text())
        pid, url = state.get("pid"), state.get("url")
        return url if pid and alive(pid) and url and healthy(url) else None

    def up(self, device: str = "auto", timeout: float = 300.0) -> str:
        """Start the app on ``port`` (its ML backend predicting on ``device``) unless it
        runs already, wait for ``/health``; its URL.

        Raises:
            ApiServerError: the port is taken, or the app exits or stays silent.
        """
        running = self.running_url()
        if running is not None:
            return running
        if not port_free(self.port):
            raise ApiServerError(
                f"port {self.port} on 127.0.0.1 is taken: stop what uses it or pass another port"
            )
        url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "tomoloop.cli", "serve-api", "--port", str(self.port)]
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [*command, "--device", device],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the command that starts it
            )
        write_private_json(self.state_file, {"pid": process.pid, "url": url})
        try:
            code = await_health(process, url, timeout, poll_s=0.5)
        except TimeoutError:
            self.down()
            raise ApiServerError(
                f"{url}/health did not answer within {timeout:.0f} s: see {self.log_file}"
            ) from None
        if code is not None:
            raise ApiServerError(
                f"`tomoloop serve-api` exited with code {code} while starting: see {self.log_file}"
            )
        return url

    def down(self) -> int | None:
        """Stop the background app; the pid it stopped, or None when it did not run."""
        if not self.state_file.exists():
            return None
        state = json.loads(self.state_file.read_text())
        pid = state.get("pid")
        stopped = pid if pid and stop_group(pid, MARKER) else None
        write_private_json(self.state_file, {**state, "pid": None})
        return stopped
