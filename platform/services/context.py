"""``Services``: the registry, the artifact store and Label Studio of the settings, opened
together and closed together (``with Services.from_settings() as services: …``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType

from tomoloop.adapters.artifacts import ArtifactStore
from tomoloop.adapters.labelstudio import LabelStudioClient
from tomoloop.adapters.labelstudio_server import LocalLabelStudio, label_studio_credentials
from tomoloop.config import Settings
from tomoloop.db.registry import Registry

# Where a service step reports progress: a flow passes its Prefect run logger.
Log = logging.Logger | logging.LoggerAdapter


@dataclass(frozen=True)
class LabelStudio:
    """A Label Studio server: its client, its URL, and the media folder it serves task
    images from."""

    client: LabelStudioClient
    url: str
    media: Path


def connect(settings: Settings) -> LabelStudio:
    """The Label Studio of the settings (a local one under ``home`` unless a URL is set)."""
    url, token = label_studio_credentials(settings)
    media = settings.label_studio_files or LocalLabelStudio(settings.home).files_root / "media"
    return LabelStudio(LabelStudioClient(url, token), url, Path(media))


@dataclass(frozen=True)
class Services:
    """The registry and artifact store of ``settings``; Label Studio on first use."""

    registry: Registry
    store: ArtifactStore
    settings: Settings = field(default_factory=Settings)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, create: bool = True) -> Services:
        """The registry and artifact store of the settings (``create``: see
        :meth:`Registry.from_url`)."""
        settings = settings or Settings()
        return cls(
            Registry.from_url(settings.registry_url, create),
            ArtifactStore(settings.artifact_root),
            settings,
        )

    @cached_property
    def label_studio(self) -> LabelStudio:
        """The settings' Label Studio, connected when first asked for."""
        return connect(self.settings)

    def close(self) -> None:
        self.registry.engine.dispose()

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
