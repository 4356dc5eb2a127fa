"""Control arms: the same loop run on a fork of the registry (another strategy, the same
labels so far, the same champion), so the fork's rounds never reach the original dataset.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tomoloop.errors import TomoloopError
from tomoloop.services.context import Services

CONTROLS = "controls"  # the folder of the home that holds the forks


@dataclass(frozen=True)
class Control:
    """A fork of a registry and its artifact store in ``folder``, holding the original's
    dataset under the name ``dataset``."""

    dataset: str
    folder: Path

    @property
    def env(self) -> dict[str, str]:
        """The settings (``TOMOLOOP_`` variables) under which flows use the fork: its own
        SQLite registry and artifact store; Label Studio stays the original's (the fork's
        projects carry its dataset's name)."""
        return {
            "TOMOLOOP_DATABASE_URL": f"sqlite:///{self.folder / 'registry.sqlite'}",
            "TOMOLOOP_ARTIFACTS_URL": str(self.folder / "artifacts"),
        }


def fork_control(services: Services, dataset: str, arm: str) -> Control:
    """The registry and artifact store of ``services`` forked into
    ``home/controls/<dataset>-<arm>`` with ``dataset`` named ``<dataset>-<arm>`` there
    (:meth:`tomoloop.db.registry.Registry.fork`, then :meth:`ArtifactStore.fork`, so the
    store holds every artifact a forked row names); both originals are only read. A failed
    fork leaves no folder behind.

    Raises:
        TomoloopError: the folder exists already (an earlier fork of that name).
        RegistryError: as :meth:`Registry.fork` refuses.
    """
    name = f"{dataset}-{arm}"
    control = Control(name, services.settings.home / CONTROLS / name)
    if control.folder.exists():
        raise TomoloopError(
            f"{control.folder} exists: a control {name!r} was forked already; remove the "
            "folder to fork again"
        )
    env = control.env
    try:
        services.registry.fork(env["TOMOLOOP_DATABASE_URL"], dataset, name).engine.dispose()
        services.store.fork(env["TOMOLOOP_ARTIFACTS_URL"])  # holds all the fork refers to
    except BaseException:
        shutil.rmtree(control.folder, ignore_errors=True)
        raise
    return control
