"""Label Studio's ML backend for a dataset: the dataset's champion predicts any task's
slice, and ``tomoloop labelstudio connect`` registers the backend with the dataset's
project.

Label Studio asks for predictions of the tasks an annotator opens without one and of the
tasks someone asks predictions for (Data Manager → Retrieve predictions). Each task's data
name its slice (``volume``, ``axis``, ``index``, as every task tomoloop pushes carries
them); the answer is the champion's class mask as brush regions (one per phase present,
encoded as :func:`~tomoloop.adapters.labelstudio.brush_results` does for a push), the
champion's registry id as ``model_version`` and the score a push gives:
1 / (1 + mean per-pixel entropy), so Label Studio's uncertainty sampling serves the least
sure slice first.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import torch

from tomoloop.adapters.labelstudio_registry import project_title
from tomoloop.db.entities import Volume
from tomoloop.errors import TomoloopError
from tomoloop.inference.predict import normalise
from tomoloop.inference.uncertainty import entropy, mean_score
from tomoloop.labels.studio_json import brush_results, labeling_config, queue_score
from tomoloop.services.context import Services
from tomoloop.services.datasets import dataset_phases
from tomoloop.services.labelstudio import instructions, predicted_probabilities
from tomoloop.services.models import SemanticModel, load_registered_model
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.stack import Axis, axis_named
from tomoloop.stacks.window import percentile_window

BACKEND_TITLE = "tomoloop champion"


class TaskNotPredictable(TomoloopError):
    """A task whose data do not name a slice of the dataset's volumes."""


@dataclass(frozen=True)
class TaskSlice:
    """The slice a task shows: a registered volume, an axis and an index along it."""

    volume: Volume
    axis: Axis
    index: int


def backend_url(api_url: str, dataset: str) -> str:
    """Where a dataset's ML backend answers on tomoloop's HTTP app at ``api_url``
    (``<api_url>/ml/<dataset>``; Label Studio appends ``/predict``, ``/setup``, …)."""
    return f"{api_url.rstrip('/')}/ml/{quote(dataset, safe='')}"


def task_slice(volumes: Sequence[Volume], data: Mapping[str, Any]) -> TaskSlice:
    """The slice a task's data name (``volume``: a volume's name, ``axis``: z, y or x,
    ``index``: 0-based along the axis), among ``volumes`` (the dataset's).

    Raises:
        TaskNotPredictable: a field is missing or malformed, the volume is not one of
            ``volumes``, or the index lies outside it.
    """
    missing = [key for key in ("volume", "axis", "index") if key not in data]
    if missing:
        raise TaskNotPredictable(
            f"the task's data lack {', '.join(missing)}: give volume, axis and index as the "
            "tasks tomoloop pushes do"
        )
    named = {v.name: v for v in volumes}
    volume = named.get(str(data["volume"]))
    if volume is None:
        raise TaskNotPredictable(
            f"volume {data['volume']!r} is not one of the dataset's: {', '.join(named)}"
        )
    try:
        axis, index = axis_named(str(data["axis"])), int(data["index"])
    except (TypeError, ValueError) as exc:
        raise TaskNotPredictable(f"the task's slice is malformed ({exc})") from None
    depth = (volume.shape_z, volume.shape_y, volume.shape_x)["zyx".index(axis)]
    if not 0 <= index < depth:
        raise TaskNotPredictable(
            f"index {index} is outside volume {volume.name!r}, which has {depth} slices along "
            f"{axis}"
        )
    return TaskSlice(volume, axis, index)


def slice_prediction(
    model: SemanticModel, where: TaskSlice, device: torch.device
) -> tuple[np.ndarray, float]:
    """The model's (H, W) uint8 class mask of a slice (normalised with its volume's
    percentile window, as a push and ``tomoloop predict`` do) and its queue score
    (1 / (1 + mean per-pixel entropy in nats))."""
    with open_stack(where.volume.path) as stack:
        image = normalise(stack.slice(where.axis, where.index), percentile_window(stack))
    probs = predicted_probabilities(model, image, device)
    score = queue_score(mean_score(entropy(probs)))
    assert score is not None
    return probs.argmax(axis=0).astype(np.uint8), score


class ChampionBackend:
    """The ML backend of every dataset of a registry: each dataset's champion (loaded on
    ``device`` when first asked, reloaded when another model becomes champion) predicts
    the slices of Label Studio tasks. Safe to call from several request threads."""

    def __init__(self, services: Services, device: torch.device) -> None:
        self.services = services
        self.device = device
        self._lock = threading.Lock()
        self._loaded: dict[str, SemanticModel] = {}

    def model_version(self, dataset: str) -> str:
        """The dataset's champion id as Label Studio's model version ("" without one).

        Raises:
            RegistryError: no dataset is called ``dataset``.
        """
        self.services.registry.dataset(dataset)
        champion = self.services.registry.champion(dataset)
        return "" if champion is None else str(champion.id)

    def predict(self, dataset: str, tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One Label Studio prediction per task (given as its data), in order:
        ``{"result": brush regions, "score", "model_version"}``, or ``{"model_version",
        "error"}`` for a task that names no slice of the dataset (Label Studio stores no
        prediction for it) and for every task while the dataset has no champion.

        Raises:
            RegistryError: no dataset is called ``dataset``.
        """
        registry = self.services.registry
        version = registry.dataset(dataset)
        champion = registry.champion(dataset)
        if champion is None:
            why = f"dataset {dataset!r} has no champion model yet: train and promote one"
            return [{"model_version": "", "error": why} for _ in tasks]
        names = dataset_phases(self.services, version).names
        volumes = registry.dataset_volumes(version.id)
        answers = []
        with self._lock:  # one model load and one forward pass at a time
            model = self._champion(dataset, champion.id)
            for data in tasks:
                answer: dict[str, Any] = {"model_version": str(champion.id)}
                try:
                    mask, score = slice_prediction(model, task_slice(volumes, data), self.device)
                except TaskNotPredictable as exc:
                    answers.append({**answer, "error": str(exc)})
                    continue
                answers.append({**answer, "result": brush_results(mask, names), "score": score})
        return answers

    def _champion(self, dataset: str, model_id: int) -> SemanticModel:
        loaded = self._loaded.get(dataset)
        if loaded is None or loaded.version.id != model_id:
            loaded = load_registered_model(self.services, model_id, self.device)
            self._loaded[dataset] = loaded
        return loaded


def connect_backend(services: Services, dataset: str, api_url: str) -> dict[str, Any]:
    """Register tomoloop's HTTP app at ``api_url`` as the ML backend of the dataset's
    project (created if new) and let the project ask it for a prediction of every task
    opened without one; what was connected where. Connecting again updates the backend.
    The champion's id becomes the project's model version (the predictions its queue
    ranks and its labelling stream shows) once the project holds a prediction of it
    (``model_version_shown``; a round pushed with the champion sets it too).

    Raises:
        RegistryError: no dataset is called ``dataset``.
        LabelStudioRefused: Label Studio could not reach the backend (start
            ``tomoloop serve-api`` first) or refused it.
    """
    registry = services.registry
    names = dataset_phases(services, registry.dataset(dataset)).names
    client = services.label_studio.client
    project = client.ensure_project(
        project_title(dataset), labeling_config(names, 1, instructions(names))
    )
    url = backend_url(api_url, dataset)
    token = services.settings.api_token
    password = None if token is None or not token.get_secret_value() else token.get_secret_value()
    backend = client.connect_ml_backend(project, url, BACKEND_TITLE, password)
    champion = registry.champion(dataset)
    shown = champion is not None and client.show_model_version(project, str(champion.id))
    return {
        "dataset": dataset,
        "project": project,
        "ml_backend": backend,
        "backend_url": url,
        "model_version": None if champion is None else champion.id,
        "model_version_shown": shown,
        "url": f"{services.label_studio.url}/projects/{project}/data",
    }


def predict_project(services: Services, dataset: str) -> bool:
    """Ask Label Studio for the connected backend's predictions of every task of the
    dataset's project (a task holding the champion's is skipped) and make the champion's
    the ones the project shows; whether they are shown (False without a champion)."""
    client = services.label_studio.client
    names = dataset_phases(services, services.registry.dataset(dataset)).names
    project = client.ensure_project(
        project_title(dataset), labeling_config(names, 1, instructions(names))
    )
    champion = services.registry.champion(dataset)
    if champion is None:
        return False
    client.retrieve_predictions(project, list(client.task_ids(project).values()))
    return client.show_model_version(project, str(champion.id))
