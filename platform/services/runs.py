"""The training-run lifecycle, one for every backend: a request names its run folder → a
finished request answers with its model → otherwise the run opens (or resumes the
interrupted one the folder remembers) with a heartbeat → it finishes with its metrics and
checkpoint in one transaction, or is marked failed on any error.

    folder = run_folder(services, request)
    if folder.done is None:
        with training_run(services, folder.path, request, name, arch, backend, device) as run:
            ...
            finish_run(services, run, metrics, steps, curve_key, checkpoint)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tomoloop.adapters.artifacts import Artifact
from tomoloop.db.registry import NewMetric, Registry, RegistryError
from tomoloop.db.states import RunStatus
from tomoloop.outputs import writing
from tomoloop.processes import HEARTBEAT_S, gone_reason, this_process
from tomoloop.services.context import Services


@dataclass(frozen=True)
class AlreadyTrained:
    """A request whose run finished before: the model it made."""

    model_version: int

    def to_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "resumed": False, "already_trained": True}


@dataclass(frozen=True)
class RunFolder:
    """A request's checkpoint folder, and what it already trained (None: nothing yet)."""

    path: Path
    done: AlreadyTrained | None


@dataclass(frozen=True)
class Run:
    """An open training run and the model version it trains."""

    model_id: int
    run_id: int


def request_key(request: dict[str, Any]) -> str:
    """A short stable hash of a training request (names its checkpoint folder)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]


def saved_run(
    services: Services, folder: Path, request: dict[str, Any]
) -> tuple[int, int, str] | None:
    """(model version, run, status) that the request's folder remembers, if this registry
    holds that run for this very request (another registry may reuse the ids).
    """
    marker = folder / "run.json"
    if not marker.exists():
        return None
    saved = json.loads(marker.read_text())
    try:
        model = services.registry.model(saved["model_version"])
    except RegistryError:
        return None
    if model.config != json.loads(json.dumps(request)):
        return None
    for run in services.registry.training_runs(model.id):
        if run.id == saved["training_run"]:
            return model.id, run.id, run.status
    return None


def run_folder(services: Services, request: dict[str, Any]) -> RunFolder:
    """The request's checkpoint folder under ``home/runs`` (one per registry: a fork of it
    in the same home, whose ids line up with the original's, never resumes the original's
    run), and — when a run of this very request already finished — the model it made, so
    a repeated request trains nothing.
    """
    registry = services.registry.engine.url.render_as_string(hide_password=True)
    folder = services.settings.home / "runs" / request_key({**request, "registry": registry})
    saved = saved_run(services, folder, request)
    if saved is not None and saved[2] == RunStatus.FINISHED:
        return RunFolder(folder, AlreadyTrained(saved[0]))
    return RunFolder(folder, None)


def open_run(
    services: Services,
    folder: Path,
    request: dict[str, Any],
    name: str,
    arch: str,
    backend: str,
    device: str,
) -> Run:
    """The model version and running training run of this request: the interrupted ones
    the folder remembers (a resumed run keeps its identity), or new ones.
    """
    registry = services.registry
    registry.fail_gone_runs(gone_reason)  # a killed run of this request may resume below
    owner = this_process()
    saved = saved_run(services, folder, request)
    if saved is not None:
        model_id, run_id, _ = saved
        registry.resume_training(run_id, owner)
        return Run(model_id, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    with registry.atomic():
        model_id = registry.register_model(
            name,
            arch,
            backend,
            request["dataset_version"],
            config=request,
            parent_id=request["parent"],
        )
        run_id = registry.start_training(model_id, device, owner)
    temp = folder / ".run.json"
    temp.write_text(json.dumps({"model_version": model_id, "training_run": run_id}))
    temp.replace(folder / "run.json")
    return Run(model_id, run_id)


@contextmanager
def training_run(
    services: Services,
    folder: Path,
    request: dict[str, Any],
    name: str,
    arch: str,
    backend: str,
    device: str,
) -> Iterator[Run]:
    """The request's run (:func:`open_run`), beating while the block runs, marked failed
    if the block raises anything (a kill leaves it running until its heartbeat stops, and
    the next open fails it)."""
    with writing("the run folder", folder):
        run = open_run(services, folder, request, name, arch, backend, device)
    heartbeat = start_heartbeat(services.registry, run.run_id)
    try:
        yield run
    except BaseException:
        services.registry.update_training(run.run_id, RunStatus.FAILED)
        raise
    finally:
        heartbeat.set()


def finish_run(
    services: Services,
    run: Run,
    metrics: Sequence[NewMetric],
    steps: int,
    curve_key: str | None,
    checkpoint: Artifact,
) -> None:
    """Record the run's metrics and close it as finished with its ``steps`` (epochs or
    iterations), learning-curve artifact and checkpoint: one transaction."""
    registry = services.registry
    with registry.atomic():
        registry.add_metrics(run.model_id, metrics, run.run_id)
        registry.update_training(
            run.run_id, RunStatus.FINISHED, steps, curve_key, (checkpoint.key, checkpoint.sha256)
        )


def start_heartbeat(
    registry: Registry, run_id: int, every_s: float = HEARTBEAT_S
) -> threading.Event:
    """Beat for a run every ``every_s`` seconds from a daemon thread, until the returned
    event is set or the run is no longer ``running`` (it ends with the process, which is
    what a heartbeat is for)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                if not registry.beat(run_id):
                    return
            except Exception:  # a database blip: the next beat tries again
                continue

    threading.Thread(target=beat, name=f"heartbeat-run-{run_id}", daemon=True).start()
    return stop
