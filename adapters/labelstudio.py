"""Label Studio through its SDK (label-studio-sdk 2.x): semantic and instance projects,
tasks with the model's prediction pre-filled, annotations back as Label Studio results
(their forms, and the masks they decode to, are :mod:`tomoloop.labels.studio_json`).
Calls that fail because the server is down or answers 5xx are retried with exponential
backoff, then raise :class:`LabelStudioUnavailable` naming the server and what to check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from tomoloop.errors import TomoloopError
from tomoloop.labels.studio_json import PulledAnnotation, TaskSpec, queue_score


class LabelStudioUnavailable(TomoloopError):
    """The Label Studio server is unreachable or failing after retries."""


class LabelStudioRefused(TomoloopError):
    """Label Studio answered a request with a client error (4xx)."""


def _refusal(what: str, exc: ApiError) -> LabelStudioRefused:
    body = exc.body if isinstance(exc.body, dict) else {"detail": str(exc.body)[:300]}
    detail = body.get("validation_errors") or body.get("detail") or body
    return LabelStudioRefused(f"Label Studio refused to {what} (HTTP {exc.status_code}): {detail}")


def _transient(exc: Exception) -> bool:
    if isinstance(exc, ApiError):
        return exc.status_code is None or exc.status_code >= 500
    return isinstance(exc, httpx.TransportError)


class LabelStudioClient:
    """The calls tomoloop makes, each retried on connection errors and 5xx answers."""

    def __init__(
        self, url: str, token: str, retries: int = 4, backoff_s: float = 0.5, timeout_s=30.0
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.sdk = LabelStudio(base_url=url, api_key=token, timeout=timeout_s)

    def call(self, what: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)`` with bounded retries and exponential backoff."""
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if isinstance(exc, ApiError) and not _transient(exc):
                    raise _refusal(what, exc) from None
                if not _transient(exc):
                    raise
                if attempt == self.retries:
                    raise LabelStudioUnavailable(
                        f"Label Studio at {self.url} failed to {what} after {self.retries + 1} "
                        f"attempts ({type(exc).__name__}: {str(exc)[:200]}): check that it "
                        "runs (`tomoloop labelstudio status`) and try again"
                    ) from exc
                time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def ensure_project(self, title: str, label_config: str) -> int:
        """The id of the project called ``title``, created with this labelling view
        (:func:`tomoloop.labels.studio_json.labeling_config`) if it does not exist (an
        existing project keeps its view: its tasks were made for it); its queue serves the
        most uncertain tasks first.
        """
        found = self.find_project(title)
        if found is not None:
            return found
        project = self.call(
            "create a project",
            self.sdk.projects.create,
            title=title,
            label_config=label_config,
        )
        self.call(
            "switch on uncertainty ordering",
            self.sdk.projects.update,
            id=project.id,
            sampling="Uncertainty sampling",
        )
        return project.id

    def find_project(self, title: str) -> int | None:
        """The id of the project called ``title`` (None if there is none)."""
        for project in self.call("list projects", lambda: list(self.sdk.projects.list())):
            if project.title == title:
                return project.id
        return None

    def label_config(self, project_id: int) -> str:
        """The project's labelling view (XML; read it with :mod:`tomoloop.labels.studio_json`)."""
        project = self.call("read a project", self.sdk.projects.get, id=project_id)
        return str(project.label_config)

    def allow_local_files(self, project_id: int, folder: str) -> None:
        """Let the project show images from ``folder`` (under the server's local-files
        document root) through ``/data/local-files/?d=…``.
        """
        existing = self.call(
            "list storages",
            lambda: list(self.sdk.import_storage.local.list(project=project_id)),
        )
        if not any(s.path == folder for s in existing):
            self.call(
                "add a local-files storage",
                self.sdk.import_storage.local.create,
                project=project_id,
                path=folder,
                use_blob_urls=True,
                title="tomoloop slices",
            )

    def _pushed_tasks(self, project_id: int) -> list[Any]:
        """The project's tasks that tomoloop pushed (their data carry a ``key``), with
        their annotations.
        """
        tasks = self.call(
            "list tasks", lambda: list(self.sdk.tasks.list(project=project_id, fields="all"))
        )
        return [t for t in tasks if isinstance(t.data, dict) and "key" in t.data]

    def task_ids(self, project_id: int) -> dict[str, int]:
        """``{task key: task id}`` of the project's tasks that tomoloop pushed."""
        return {t.data["key"]: t.id for t in self._pushed_tasks(project_id)}

    def push(self, project_id: int, tasks: Sequence[TaskSpec]) -> dict[str, int]:
        """Import the tasks not yet in the project (by key), each with its prediction;
        ``{key: task id}`` of all of them. Re-running after an interrupted push imports
        only what is missing, so no task is duplicated.
        """
        existing = self.task_ids(project_id)
        new = [t for t in tasks if t.key not in existing]
        if new:
            payload = []
            for t in new:
                item: dict[str, Any] = {"data": {"key": t.key, **t.images, **t.meta}}
                if t.prediction is not None:
                    item["predictions"] = [
                        {
                            "model_version": t.model_version,
                            "score": queue_score(t.score),
                            "result": t.prediction,
                        }
                    ]
                payload.append(item)
            self.call(
                "import tasks",
                self.sdk.projects.import_tasks,
                id=project_id,
                request=payload,
                return_task_ids=True,
            )
            existing = self.task_ids(project_id)
        versions = {t.model_version for t in tasks if t.prediction is not None}
        if len(versions) == 1:  # the queue ranks (and shows) this version's predictions
            self.call(
                "set the project's model version",
                self.sdk.projects.update,
                id=project_id,
                model_version=versions.pop(),
            )
        return {t.key: existing[t.key] for t in tasks}

    def connect_ml_backend(
        self, project_id: int, url: str, title: str, password: str | None = None
    ) -> int:
        """Register the ML backend at ``url`` with the project (or update the one already
        registered there) and let the project ask it for a prediction of every task opened
        without one; the backend's id. Label Studio checks the backend's ``/health`` and
        ``/setup`` before it accepts it. ``password``: sent as HTTP basic auth (user
        ``tomoloop``).
        """
        auth: dict[str, Any] = {"auth_method": "NONE"}
        if password is not None:
            auth = {
                "auth_method": "BASIC_AUTH",
                "basic_auth_user": "tomoloop",
                "basic_auth_pass": password,
            }
        existing = self.call("list ML backends", lambda: list(self.sdk.ml.list(project=project_id)))
        same = [b.id for b in existing if b.url == url]
        # Label Studio checks the backend with every field it validates (an update without
        # the project fails with a server error)
        settings = {
            "project": project_id,
            "url": url,
            "title": title,
            "is_interactive": False,
            "auto_update": True,
            **auth,
        }
        if same:
            backend = self.call("update the ML backend", self.sdk.ml.update, id=same[0], **settings)
        else:
            backend = self.call(
                "connect the ML backend (is `tomoloop serve-api` running where Label Studio "
                "can reach it?)",
                self.sdk.ml.create,
                **settings,
            )
        self.call(
            "switch on predictions of opened tasks",
            self.sdk.projects.update,
            id=project_id,
            evaluate_predictions_automatically=True,
            show_collab_predictions=True,
        )
        return int(backend.id)

    def show_model_version(self, project_id: int, model_version: str) -> bool:
        """Make ``model_version`` the project's model version (the one its queue ranks and
        its labelling stream shows) if the project holds a prediction of it, as Label
        Studio requires; whether it is now."""
        project = self.call("read a project", self.sdk.projects.get, id=project_id)
        if project.model_version == model_version:
            return True
        predictions = self.call(
            "list predictions", lambda: list(self.sdk.predictions.list(project=project_id))
        )
        if not any(p.model_version == model_version for p in predictions):
            return False
        self.call(
            "set the project's model version",
            self.sdk.projects.update,
            id=project_id,
            model_version=model_version,
        )
        return True

    def retrieve_predictions(self, project_id: int, task_ids: Sequence[int]) -> None:
        """Ask the project's ML backend for predictions of these tasks, as Data Manager's
        *Retrieve predictions* action does (Label Studio stores them as the tasks'
        predictions; tasks holding one of the backend's model version are skipped)."""
        self.call(
            "retrieve predictions",
            self.sdk.actions.create,
            id="retrieve_tasks_predictions",
            project=project_id,
            selected_items={"all": False, "included": list(task_ids)},
        )

    def unanswered(self, project_id: int) -> list[tuple[int, dict[str, Any]]]:
        """``(task id, task data)`` of the project's tomoloop tasks nobody answered yet."""
        return [(t.id, t.data) for t in self._pushed_tasks(project_id) if not t.annotations]

    def submit(self, task_id: int, result: list[dict], lead_time_s: float | None = None) -> int:
        """Submit Label Studio regions (:mod:`tomoloop.labels.studio_json`) as an annotation
        of a task, as the labelling view does when a person presses Submit; the annotation's
        id.
        """
        created = self.call(
            "submit an annotation",
            self.sdk.annotations.create,
            id=task_id,
            result=result,
            lead_time=lead_time_s,
        )
        return created.id

    def pull(self, project_id: int) -> list[PulledAnnotation]:
        """Every annotation of the project's tomoloop tasks (submitted, updated, skipped)."""
        return [
            PulledAnnotation.from_label_studio(task.id, task.data, a)
            for task in self._pushed_tasks(project_id)
            for a in task.annotations or []
        ]
