"""What the semantic flows fetch from the registry and the artifact store: the services
from the settings, a dataset version's labelled slices, a registered model's network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from torch import nn

from tomoloop.adapters.artifacts import ArtifactStore
from tomoloop.config import Settings
from tomoloop.data import LabelledSlice, SliceRef, load_slices
from tomoloop.db.models import DatasetVersion, ModelVersion
from tomoloop.db.registry import Registry, RegistryError
from tomoloop.models import ModelSpec, load_model
from tomoloop.phases import PhaseMap


@dataclass(frozen=True)
class Services:
    registry: Registry
    store: ArtifactStore

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Services:
        settings = settings or Settings()
        return cls(Registry.from_url(settings.registry_url), ArtifactStore(settings.artifact_root))

    def close(self) -> None:
        self.registry.engine.dispose()


def dataset_phases(services: Services, dataset: DatasetVersion) -> PhaseMap:
    """The phase map shared by every volume of a dataset version."""
    return PhaseMap.parse(services.registry.dataset_phases(dataset.id))


def dataset_slices(
    services: Services, dataset: DatasetVersion, weights: dict[str, float] | None = None
) -> dict[str, list[LabelledSlice]]:
    """Every labelled slice of a dataset version, read and decoded, grouped by split.

    Masks stored as artifacts are fetched and verified by sha256.
    """
    refs = []
    for member in services.registry.dataset_slices(dataset.id):
        mask = member.mask_rle
        if mask is None:
            if member.mask_uri is None or member.mask_sha256 is None:
                raise RegistryError(f"annotation {member.annotation_id} has no mask")
            mask = json.loads(services.store.get_bytes(member.mask_uri, member.mask_sha256))
        refs.append(
            SliceRef(
                member.volume_path,
                member.axis,
                member.index,
                mask,
                member.tier,
                member.split,
                member.annotation_id,
            )
        )
    return load_slices(refs, weights)


def load_registered_model(
    services: Services, model_id: int, device: str = "cpu"
) -> tuple[nn.Module, ModelSpec, ModelVersion]:
    """A registered torch model version, verified by sha256 and rebuilt on ``device``."""
    version = services.registry.model(model_id)
    if version.backend != "torch":
        raise RegistryError(
            f"model {model_id} is a {version.backend} model; this command needs a semantic one"
        )
    if version.checkpoint_uri is None or version.checkpoint_sha256 is None:
        raise RegistryError(
            f"model {model_id} has no checkpoint (its training did not finish): "
            "train it again or pick another model"
        )
    data = services.store.get_bytes(version.checkpoint_uri, version.checkpoint_sha256)
    model, spec = load_model(data, device)
    return model, spec, version
