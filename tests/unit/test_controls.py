"""Control arms: a fork of the registry and its artifacts in the home, and the settings
that point flows at it for a while."""

import os

import pytest

from tomoloop.config import Settings, settings_env
from tomoloop.db.registry import NewAnnotation, RegistryError
from tomoloop.errors import TomoloopError
from tomoloop.labels.tiers import Tier
from tomoloop.services import Services, fork_control


def test_settings_env_holds_its_values_inside_the_block_only(monkeypatch, tmp_path):
    monkeypatch.setenv("TOMOLOOP_ARTIFACTS_URL", "/elsewhere")
    monkeypatch.delenv("TOMOLOOP_DATABASE_URL", raising=False)
    inside = {"TOMOLOOP_DATABASE_URL": "sqlite:////fork.sqlite", "TOMOLOOP_ARTIFACTS_URL": "/fork"}
    with pytest.raises(KeyError), settings_env(inside):
        assert (Settings().registry_url, Settings().artifact_root) == (
            "sqlite:////fork.sqlite",
            "/fork",
        )
        raise KeyError("a flow that failed inside")
    assert os.environ["TOMOLOOP_ARTIFACTS_URL"] == "/elsewhere"
    assert "TOMOLOOP_DATABASE_URL" not in os.environ


@pytest.fixture
def services(tmp_path):
    """A home with a dataset ``nmc`` of one labelled slice and a stored checkpoint."""
    home = Settings(home=tmp_path / "home", database_url=None, artifacts_url=None)
    services = Services.from_settings(home)
    registry = services.registry
    volume = registry.register_volume("scan", "/scan.tif", "a" * 64, (1, 4, 4), "uint8", "a=0")
    (slice_id,) = registry.register_slices(volume, "z", [0]).values()
    registry.add_annotations([NewAnnotation(slice_id, Tier.AUTO, "rough", mask_uri="m.json",
                                            labelled_px=16)])  # fmt: skip
    registry.freeze_dataset(
        "nmc", {"train": [registry.annotation_id(slice_id, Tier.AUTO, "rough")]}
    )
    services.store.put_bytes(b"weights", ".pt")
    yield services
    services.close()


def test_a_control_is_a_fork_in_the_home_that_the_settings_point_at(services):
    control = fork_control(services, "nmc", "random")
    assert control.folder == services.settings.home / "controls" / "nmc-random"
    with settings_env(control.env), Services.from_settings() as fork:
        assert fork.registry.dataset("nmc-random").version == 1
        assert [e.key for e in fork.store.entries()] == [e.key for e in services.store.entries()]
    with pytest.raises(TomoloopError, match="controls/nmc-random exists: a control"):
        fork_control(services, "nmc", "random")


def test_a_refused_or_failed_control_leaves_no_folder(services, monkeypatch):
    from tomoloop.adapters.artifacts import ArtifactError, ArtifactStore

    with pytest.raises(RegistryError, match="no dataset 'mnc' to fork"):
        fork_control(services, "mnc", "random")
    assert not (services.settings.home / "controls").exists()

    def unreachable(store, url):
        raise ArtifactError("the store went away")

    monkeypatch.setattr(ArtifactStore, "fork", unreachable)
    with pytest.raises(ArtifactError, match="went away"):
        fork_control(services, "nmc", "random")
    assert list((services.settings.home / "controls").iterdir()) == []  # the registry too
