"""tomoloop's HTTP app (FastAPI): Label Studio webhooks in, the registry out (read-only).

- ``POST /webhooks/labelstudio``: ANNOTATION_CREATED / ANNOTATION_UPDATED from Label
  Studio. The shared secret (``TOMOLOOP_WEBHOOK_SECRET``, sent by Label Studio in the
  ``X-Tomoloop-Secret`` header) is compared in constant time. The annotation is handled as
  the polling sync handles it (same key, same registry write, same review routing), so a
  webhook and a poll of the same annotation store it once. Events of a dataset's review
  project store the reviewer's label (tier expert) the same way.
  With ``TOMOLOOP_RETRAIN_THRESHOLD`` set and an ``on_new_labels`` callback given, the
  stored annotation that brings the dataset's new labels to exactly the threshold calls
  the callback (after the response; the schedule catches any count past it) —
  ``tomoloop serve-api`` starts the dataset's ``retrain-on-labels`` deployment with it.
- ``/ml/<dataset>/…``: Label Studio's ML-backend protocol for a dataset, with a
  :class:`Predictions` given (``tomoloop serve-api`` gives the dataset's champion):
  ``GET health`` (``{"status": "UP"}``), ``POST setup`` (``{"model_version"}``, the
  champion's registry id), ``POST predict`` (``{"tasks": [{"id", "data"}, …]}`` →
  ``{"results": [{"result", "score", "model_version"}, …]}``, one per task, in order),
  ``POST webhook`` (Label Studio's events to the backend; ``START_TRAINING``, sent by the
  project's *Start training*, calls ``on_train(dataset)`` after the response; other
  events are acknowledged and ignored: annotations arrive through the webhook above)
  and ``POST train`` (the same request from servers with the webhook flag off). With
  ``TOMOLOOP_API_TOKEN`` set they need it as the password of HTTP basic auth (what Label
  Studio sends to an ML backend) or as a bearer token.
- ``GET /health``: ``{"status": "UP"}`` while the app answers.
- ``GET /volumes``, ``/datasets``, ``/models``, ``/models/{id}``, ``/rounds``: the
  registry as the CLI's ``--json`` listings show it. OpenAPI docs at ``/docs``. With
  ``TOMOLOOP_API_TOKEN`` set they need ``Authorization: Bearer <token>`` (compared in
  constant time). Without a token, ``tomoloop serve-api`` listens only on loopback
  (:func:`check_exposure`).

Run: ``uvicorn --factory tomoloop.adapters.http:create_app --host 127.0.0.1 --port 8700``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Protocol

from fastapi import BackgroundTasks, Body, Depends, FastAPI, Header, HTTPException

from tomoloop.adapters.labelstudio_registry import Intake, handle_annotation, project_of
from tomoloop.config import Settings
from tomoloop.db.registry import Registry, RegistryError
from tomoloop.db.states import EventStatus
from tomoloop.db.views import dataset_row, model_row, round_rows, volume_row
from tomoloop.errors import TomoloopError
from tomoloop.labels.phases import PhaseMap
from tomoloop.labels.studio_json import PulledAnnotation

ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
TRAINING_ACTION = "START_TRAINING"
SECRET_HEADER = "X-Tomoloop-Secret"
_BODY = (
    "expected annotation (with an integer id), task (id and data.key) and project "
    "(id and title), as Label Studio sends them"
)


class Predictions(Protocol):
    """What answers Label Studio's ML-backend requests for a dataset."""

    def model_version(self, dataset: str) -> str:
        """The model version that predicts the dataset's tasks ("" without a model).

        Raises:
            RegistryError: no dataset is called ``dataset``.
        """
        ...

    def predict(self, dataset: str, tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One Label Studio prediction per task (given as its data), in order.

        Raises:
            RegistryError: no dataset is called ``dataset``.
        """
        ...


def task_data(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The data of each task of an ML-backend ``/predict`` body, in order.

    Raises:
        ValueError: the body holds no list of tasks, or a task without a data object.
    """
    tasks = payload.get("tasks")
    if not isinstance(tasks, list) or not all(
        isinstance(t, dict) and isinstance(t.get("data"), dict) for t in tasks
    ):
        raise ValueError(
            'expected {"tasks": [{"id": …, "data": {…}}, …]} as Label Studio sends '
            "to an ML backend's /predict"
        )
    return [t["data"] for t in tasks]


def basic_password(authorization: str | None) -> str | None:
    """The password of an HTTP basic ``Authorization`` header (None for another scheme or a
    malformed header)."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon else None


def pulled_from_payload(payload: dict[str, Any]) -> tuple[int, str, PulledAnnotation]:
    """(project id, project title, annotation) of a Label Studio webhook body.

    Raises:
        ValueError: the body lacks the annotation, task or project it must carry.
    """
    try:
        annotation, task, project = payload["annotation"], payload["task"], payload["project"]
        pulled = PulledAnnotation.from_label_studio(task["id"], task["data"], annotation)
        return int(project["id"]), str(project["title"]), pulled
    except KeyError as exc:
        raise ValueError(f"webhook body lacks {exc}: {_BODY}") from exc
    except (TypeError, ValueError) as exc:
        raise ValueError(f"webhook body is malformed ({exc}): {_BODY}") from exc


def check_exposure(host: str, settings: Settings) -> None:
    """Refuse to serve the registry API beyond this machine without a token.

    Loopback (``127.0.0.0/8``, ``::1``, ``localhost``) is always allowed; any other address
    or host name (``0.0.0.0`` and ``::`` mean every interface) needs ``TOMOLOOP_API_TOKEN``.

    Raises:
        TomoloopError: ``host`` is not loopback and no token is set.
    """
    token = settings.api_token
    if (token is not None and token.get_secret_value()) or _is_loopback(host):
        return
    raise TomoloopError(
        f"--host {host} would open the registry API to the network without a token: set "
        "TOMOLOOP_API_TOKEN (clients then send Authorization: Bearer <token>) or serve on "
        "--host 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def create_app(
    settings: Settings | None = None,
    on_new_labels: Callable[[str], None] | None = None,
    predictions: Predictions | None = None,
    on_train: Callable[[str], None] | None = None,
) -> FastAPI:
    """The app over the registry and secret of ``settings`` (default: the environment);
    ``on_new_labels(dataset)`` runs when a webhook brings a dataset to the retraining
    threshold. With ``predictions`` the app is also Label Studio's ML backend of every
    dataset (``/ml/<dataset>/…``), and ``on_train(dataset)`` runs when Label Studio asks
    the backend to train.
    """
    settings = settings or Settings()
    registry = Registry.from_url(settings.registry_url)
    app = FastAPI(title="tomoloop", description="Label Studio webhooks and the registry.")

    def authorised(authorization: Annotated[str | None, Header()] = None) -> None:
        """Refuse registry reads without the bearer token, when one is configured."""
        token = settings.api_token
        if token is None or not token.get_secret_value():
            return
        expected = f"Bearer {token.get_secret_value()}".encode()
        if not hmac.compare_digest((authorization or "").encode(), expected):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    reads = [Depends(authorised)]

    @app.get("/health")
    def health() -> dict:
        """Whether the app answers (no registry access, no token)."""
        return {"status": "UP"}

    def backend_authorised(authorization: Annotated[str | None, Header()] = None) -> None:
        """Refuse ML-backend calls without the token (basic-auth password or bearer) when
        one is configured."""
        token = settings.api_token
        if token is None or not token.get_secret_value():
            return
        password = basic_password(authorization)
        if password is not None and hmac.compare_digest(
            password.encode(), token.get_secret_value().encode()
        ):
            return
        authorised(authorization)

    if predictions is not None:
        backend_routes(app, predictions, on_train, [Depends(backend_authorised)])

    @app.post("/webhooks/labelstudio")
    def labelstudio_webhook(
        payload: Annotated[dict[str, Any], Body()],
        background: BackgroundTasks,
        secret: Annotated[str | None, Header(alias=SECRET_HEADER)] = None,
    ) -> dict:
        """Store the annotation a Label Studio event carries (idempotent)."""
        expected = settings.webhook_secret
        if expected is None or not expected.get_secret_value():
            raise HTTPException(503, "webhooks are off: set TOMOLOOP_WEBHOOK_SECRET")
        if not hmac.compare_digest((secret or "").encode(), expected.get_secret_value().encode()):
            raise HTTPException(401, f"wrong or missing {SECRET_HEADER}")
        if payload.get("action") not in ANNOTATION_ACTIONS:
            return {"status": "ignored", "reason": f"action {payload.get('action')!r}"}
        try:
            project_id, title, pulled = pulled_from_payload(payload)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        found = project_of(title)
        if found is None:
            return {"status": "ignored", "reason": f"project {title!r} is not tomoloop's"}
        dataset, kind = found
        try:
            version = registry.dataset(dataset)
            names = PhaseMap.parse(registry.dataset_phases(version.id)).names
        except RegistryError as exc:
            raise HTTPException(404, str(exc)) from exc
        intake = Intake(dataset, names, project_id, settings.review_policy, kind)
        status = handle_annotation(registry, intake, pulled, "webhook")
        threshold = settings.retrain_threshold
        if status == EventStatus.STORED and on_new_labels is not None and threshold is not None:
            waiting = registry.new_labels(dataset)
            if waiting == threshold:  # this event crossed it; later ones wait for the run
                background.add_task(on_new_labels, dataset)
                return {"status": status, "retrain": f"{waiting} new labels ≥ {threshold}"}
        return {"status": status}

    @app.get("/volumes", dependencies=reads)
    def volumes() -> list[dict]:
        return [volume_row(v) for v in registry.volumes()]

    @app.get("/datasets", dependencies=reads)
    def datasets() -> list[dict]:
        return [dataset_row(registry, d) for d in registry.datasets()]

    @app.get("/models", dependencies=reads)
    def models() -> list[dict]:
        return [model_row(registry, m) for m in registry.models()]

    @app.get("/models/{model_id}", dependencies=reads)
    def model(model_id: int) -> dict:
        try:
            return model_row(registry, registry.model(model_id))
        except RegistryError as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/rounds", dependencies=reads)
    def rounds() -> list[dict]:
        return round_rows(registry)

    return app


def backend_routes(
    app: FastAPI,
    predictions: Predictions,
    on_train: Callable[[str], None] | None,
    dependencies: list[Any],
) -> None:
    """Label Studio's ML-backend protocol for each dataset under ``/ml/<dataset>/``."""

    def version_of(dataset: str) -> str:
        try:
            return predictions.model_version(dataset)
        except RegistryError as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/ml/{dataset}/health", dependencies=dependencies)
    def backend_health(dataset: str) -> dict:
        """Label Studio's check that the backend is up."""
        return {"status": "UP", "model_class": "tomoloop champion", "dataset": dataset}

    @app.post("/ml/{dataset}/setup", dependencies=dependencies)
    def backend_setup(dataset: str) -> dict:
        """The model version that predicts (the champion's registry id)."""
        return {"model_version": version_of(dataset)}

    @app.post("/ml/{dataset}/predict", dependencies=dependencies)
    def backend_predict(dataset: str, payload: Annotated[dict[str, Any], Body()]) -> dict:
        """One prediction per task of the body, in order."""
        try:
            tasks = task_data(payload)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        try:
            results = predictions.predict(dataset, tasks)
        except RegistryError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"results": results, "model_version": version_of(dataset)}

    def train(dataset: str, background: BackgroundTasks) -> dict:
        version_of(dataset)
        if on_train is None:
            return {"status": "ignored", "reason": "this app starts no training"}
        background.add_task(on_train, dataset)
        return {"status": "training", "dataset": dataset}

    @app.post("/ml/{dataset}/webhook", dependencies=dependencies, status_code=201)
    def backend_webhook(
        dataset: str, payload: Annotated[dict[str, Any], Body()], background: BackgroundTasks
    ) -> dict:
        """Start the dataset's retraining on START_TRAINING; acknowledge other events."""
        if payload.get("action") != TRAINING_ACTION:
            return {"status": "ignored", "reason": f"action {payload.get('action')!r}"}
        return train(dataset, background)

    @app.post("/ml/{dataset}/train", dependencies=dependencies, status_code=201)
    def backend_train(dataset: str, background: BackgroundTasks) -> dict:
        """Start the dataset's retraining (Label Studio without the training webhook)."""
        return train(dataset, background)
