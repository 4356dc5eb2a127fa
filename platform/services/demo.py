"""What the demo needs before its loop: its stacks (a generated electrode unless the user
gives some), a Label Studio to label in, and a registry at the current schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tomoloop.adapters.api_server import LocalApi
from tomoloop.adapters.labelstudio_server import LocalLabelStudio
from tomoloop.config import Settings
from tomoloop.db.engine import make_engine, upgrade
from tomoloop.db.entities import Slice, Volume
from tomoloop.db.views import model_row, round_rows
from tomoloop.demo import generate_sample
from tomoloop.labels.synthetic import ELECTRODE_PHASES
from tomoloop.services.context import Log, Services
from tomoloop.services.mlbackend import connect_backend, predict_project


@dataclass(frozen=True)
class DemoInputs:
    """The demo's grey stack, its labels, the gold labels the oracle answers from and
    models are judged on, the phase map, and a new scan of the same sample (no labels; its
    gold is ``gold``; None with the user's stacks) (paths as strings)."""

    gray: str
    labels: str | None
    gold: str | None
    phases: str | None
    new_scan: str | None = None


def demo_inputs(
    folder: Path, gray: str | None, labels: str | None, gold: str | None, phases: str | None
) -> DemoInputs:
    """The user's stacks (``gold`` defaults to ``labels``), or — without ``gray`` — a
    synthetic electrode generated into ``folder/sample`` with exact (gold) and rough
    labels, and a new scan of it (:func:`tomoloop.demo.new_scan`)."""
    folder.mkdir(parents=True, exist_ok=True)
    if gray is None:
        gray, labels, gold, scan = (str(p) for p in generate_sample(folder / "sample"))
        return DemoInputs(gray, labels, gold, str(ELECTRODE_PHASES), scan)
    return DemoInputs(gray, labels, gold or labels, phases)


def label_studio_up(settings: Settings, port: int, log: Log) -> str | None:
    """The URL of the settings' Label Studio, a local one started on ``port`` if none is
    set."""
    configured = settings.label_studio_url
    if configured:
        return configured
    url = LocalLabelStudio(settings.home, port=port).up().url
    log.info("Label Studio at %s", url)
    return url


def ml_backend_up(settings: Settings, dataset: str, port: int, device: str, log: Log) -> str:
    """Leave the HTTP app running in the background on ``port`` as the ML backend of the
    dataset's project (connected, the champion's predictions of its tasks retrieved and
    shown), so a person opening any task sees the champion's prediction; the backend's
    URL."""
    api = LocalApi(settings.home, port).up(device)
    with Services.from_settings(settings) as services:
        connected = connect_backend(services, dataset, api)
        predict_project(services, dataset)
    log.info("ML backend %s connected to Label Studio", connected["backend_url"])
    return str(connected["backend_url"])


def upgrade_registry(settings: Settings) -> None:
    """Migrate the settings' registry to the current schema."""
    engine = make_engine(settings.registry_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class RegistrySummary:
    """What the demo's report shows of the registry: the dataset's models (cut to the
    report's columns), every round, and the review summary."""

    models: list[dict[str, Any]]
    rounds: list[dict[str, Any]]
    reviews: dict[str, Any]


@dataclass(frozen=True)
class ChosenSlice:
    """A slice a round chose, with its volume and score."""

    slice: Slice
    volume: Volume
    score: float


def registry_summary(services: Services, dataset: str) -> RegistrySummary:
    """The registry as the demo's report shows it for ``dataset``."""
    registry = services.registry
    models = [_compact(model_row(registry, m)) for m in registry.models() if m.name == dataset]
    rounds = round_rows(registry)
    return RegistrySummary(models, rounds, registry.review_summary(dataset))


def first_chosen(services: Services, round_id: int) -> ChosenSlice:
    """The first slice round ``round_id`` chose."""
    item = services.registry.round_items(round_id)[0]
    slice_, volume = services.registry.slice_volumes([item.slice_id])[item.slice_id]
    return ChosenSlice(slice_, volume, item.score)


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    """A model listing row cut to what the demo's table shows."""
    keep = ("id", "arch", "stage", "dataset_version", "parent")
    return {**{k: row[k] for k in keep}, "test mIoU": row["metrics"].get("test/mIoU")}
