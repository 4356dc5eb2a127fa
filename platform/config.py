"""The one settings object: environment variables with prefix ``TOMOLOOP_``.

Secrets (tokens, database passwords inside URLs) come only from the environment and are
never written to the registry, logs or git.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tomoloop.active.review import ReviewPolicy
from tomoloop.errors import RegistryDatabaseError

_IN_MEMORY = re.compile(r"sqlite(\+\w+)?://(/(:memory:)?)?(\?.*)?")
"""SQLite URLs of a database in memory: ``sqlite://``, ``sqlite:///:memory:``."""


class Settings(BaseSettings):
    """tomoloop's configuration.

    Attributes:
        home: where the embedded defaults live (SQLite registry, artifacts).
        database_url: SQLAlchemy URL of the registry; default a SQLite file in ``home``.
        artifacts_url: fsspec URL of the artifact store; default ``home/artifacts``
            (``s3://bucket/prefix`` works with s3fs installed).
        label_studio_url, label_studio_token: an existing Label Studio server and its
            token (personal access token or legacy); default the local server that
            ``tomoloop labelstudio up`` starts.
        label_studio_token_block: the name of a Prefect Secret block holding the token,
            for workers that get their secrets from the Prefect server (used when
            ``label_studio_token`` is not set).
        label_studio_files: where slice images for Label Studio are written: a folder
            directly inside the server's ``LOCAL_FILES_DOCUMENT_ROOT`` (default the local
            server's ``home/labelstudio/files/media``).
        webhook_secret: the shared secret Label Studio's webhooks must carry.
        retrain_threshold: new labels (annotator/expert, unseen by the newest model) at
            which a webhook event starts the dataset's ``retrain-on-labels`` deployment;
            None: only the schedule checks.
        api_token: when set, the HTTP app's registry API answers only requests that carry
            ``Authorization: Bearer <token>``.
        review_min_iou, review_min_agreement, review_qa_rate: when an annotator's label
            goes to the review project (:class:`tomoloop.active.ReviewPolicy`): mean IoU
            with the pre-filled prediction below ``review_min_iou``, mean Dice with another
            annotator of the task below ``review_min_agreement``, or a QA sample of
            ``review_qa_rate`` (0 switches sampling off).
    """

    model_config = SettingsConfigDict(env_prefix="TOMOLOOP_")

    home: Path = Field(default_factory=lambda: Path.home() / ".tomoloop")
    database_url: str | None = None
    artifacts_url: str | None = None
    label_studio_url: str | None = None
    label_studio_token: SecretStr | None = None
    label_studio_token_block: str | None = None
    label_studio_files: Path | None = None
    webhook_secret: SecretStr | None = None
    retrain_threshold: int | None = None
    api_token: SecretStr | None = None
    review_min_iou: float = Field(0.8, ge=0.0, le=1.0)
    review_min_agreement: float = Field(0.8, ge=0.0, le=1.0)
    review_qa_rate: float = Field(0.1, ge=0.0, le=1.0)

    @property
    def review_policy(self) -> ReviewPolicy:
        return ReviewPolicy(self.review_min_iou, self.review_min_agreement, self.review_qa_rate)

    @property
    def registry_url(self) -> str:
        """``database_url``, default the SQLite file ``home/registry.sqlite``.

        Raises:
            RegistryDatabaseError: ``database_url`` is an in-memory SQLite one (everything
                stored would be gone when the command ends).
        """
        if self.database_url and _IN_MEMORY.fullmatch(self.database_url):
            raise RegistryDatabaseError(
                f"TOMOLOOP_DATABASE_URL {self.database_url} is a registry in memory: what a "
                "command stores would be lost when it ends; use sqlite:////abs/path/registry"
                ".sqlite (or unset it for TOMOLOOP_HOME's)"
            )
        return self.database_url or f"sqlite:///{self.home / 'registry.sqlite'}"

    @property
    def artifact_root(self) -> str:
        return self.artifacts_url or str(self.home / "artifacts")


@contextmanager
def settings_env(values: Mapping[str, str]) -> Iterator[None]:
    """Inside the block the process environment holds ``values`` (``TOMOLOOP_`` variables),
    so every :class:`Settings` made there reads them (a flow run on a control's registry);
    the earlier values, or their absence, come back after."""
    earlier = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in earlier.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
