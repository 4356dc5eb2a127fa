"""The service layer on a real registry: Services closes what it opens, one loader refuses
a model of the wrong kind before it loads anything, and the training-run lifecycle marks
a failed block failed, resumes it as the same model and answers a finished request."""

import threading

import pytest

from tomoloop.adapters.artifacts import ArtifactStore
from tomoloop.config import Settings
from tomoloop.db.registry import Registry, RegistryError
from tomoloop.networks.registry import ModelSpec, save_model
from tomoloop.particles.flaws import FlawNet, FlawTrainConfig, save_classifier
from tomoloop.services import (
    AlreadyTrained,
    FlawModel,
    SemanticModel,
    Services,
    finish_run,
    load_registered_model,
    run_folder,
    training_run,
)

pytestmark = pytest.mark.integration
SQLITE = pytest.mark.parametrize("registry_url", ["sqlite"], indirect=True)


@pytest.fixture
def services(tmp_path, registry_url):
    settings = Settings(home=tmp_path / "home", database_url=registry_url)
    with Services.from_settings(settings) as opened:
        yield opened


@SQLITE
def test_services_dispose_the_registry_engine_when_the_block_ends_even_on_error(
    tmp_path, registry_url, monkeypatch
):
    settings = Settings(home=tmp_path / "home", database_url=registry_url)
    disposed = []
    with pytest.raises(RuntimeError, match="boom"), Services.from_settings(settings) as services:
        monkeypatch.setattr(services.registry.engine, "dispose", lambda: disposed.append(1))
        raise RuntimeError("boom")
    assert disposed == [1]


@SQLITE
def test_one_loader_loads_every_kind_and_refuses_the_wrong_kind_or_no_checkpoint(services):
    registry, store = services.registry, services.store
    spec = ModelSpec("unet", 1, 3, {}, ("pore", "nmc", "cbd"), 32)
    unet = store.put_bytes(save_model(spec.build(), spec), ".pt")
    flaws = store.put_bytes(save_classifier(FlawNet(), FlawTrainConfig()), ".pt")
    semantic = registry.register_model(
        "m", "unet", "torch", None, checkpoint_uri=unet.key, checkpoint_sha256=unet.sha256
    )
    flawnet = registry.register_model(
        "f", "flawnet", "torch", None, checkpoint_uri=flaws.key, checkpoint_sha256=flaws.sha256
    )
    untrained = registry.register_model("u", "unet", "torch", None)
    detector = registry.register_model("d", "maskrcnn", "detectron2", None)

    loaded = load_registered_model(services, semantic)
    assert isinstance(loaded, SemanticModel) and loaded.spec == spec
    assert loaded.version.id == semantic and not loaded.network.training
    assert isinstance(load_registered_model(services, flawnet, "cpu", "flaws"), FlawModel)
    with pytest.raises(RegistryError, match="has no checkpoint"):
        load_registered_model(services, untrained)
    with pytest.raises(RegistryError, match="needs a semantic one"):
        load_registered_model(services, detector)
    with pytest.raises(RegistryError, match="needs a Mask R-CNN"):
        load_registered_model(services, semantic, "cpu", "maskrcnn")
    with pytest.raises(RegistryError, match="not a trained flaw classifier"):
        load_registered_model(services, semantic, "cpu", "flaws")


@SQLITE
def test_a_failed_run_is_marked_failed_resumes_as_the_same_model_and_then_answers(services):
    registry: Registry = services.registry
    request = {"dataset_version": None, "parent": None, "arch": "unet", "train": {"epochs": 1}}
    folder = run_folder(services, request)
    assert folder.done is None
    opened = []
    with (
        pytest.raises(RuntimeError, match="power cut"),
        training_run(services, folder.path, request, "m", "unet", "torch", "cpu") as run,
    ):
        opened.append(run)
        raise RuntimeError("power cut")
    (failed,) = opened
    assert [r.status for r in registry.training_runs(failed.model_id)] == ["failed"]

    with training_run(services, folder.path, request, "m", "unet", "torch", "cpu") as again:
        assert again == failed  # the folder remembers the run: same model, same run
        (heartbeat,) = _heartbeats(again.run_id)  # beats while the run runs
        checkpoint = ArtifactStore(services.settings.artifact_root).put_bytes(b"weights", ".pt")
        finish_run(services, again, [], 1, None, checkpoint)
    heartbeat.join(timeout=5)
    assert not _heartbeats(again.run_id)  # and stops with the block, not a beat later
    (finished,) = registry.training_runs(failed.model_id)
    assert finished.status == "finished"
    assert registry.model(failed.model_id).checkpoint_sha256 == checkpoint.sha256
    assert run_folder(services, request).done == AlreadyTrained(failed.model_id)
    assert run_folder(services, {**request, "arch": "ynet"}).done is None
    # another registry in the same home (a control's fork: its ids line up with these) has
    # folders of its own, so it never resumes this registry's runs
    other_url = f"sqlite:///{services.settings.home / 'controls' / 'registry.sqlite'}"
    with Services.from_settings(
        Settings(home=services.settings.home, database_url=other_url)
    ) as other:
        assert run_folder(other, request).path != folder.path


def _heartbeats(run_id: int) -> list[threading.Thread]:
    """The live heartbeat threads of training run ``run_id``."""
    return [t for t in threading.enumerate() if t.name == f"heartbeat-run-{run_id}"]
