"""One loader for every registered model, whatever its backend: checked, fetched from the
artifact store, verified by sha256 and rebuilt on a device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple, overload

import torch
from torch import nn

from tomoloop.adapters.artifacts import ArtifactStore
from tomoloop.db.entities import ModelVersion
from tomoloop.db.registry import RegistryError
from tomoloop.networks.registry import ModelSpec, load_model
from tomoloop.particles.flaws import FlawNet, load_classifier
from tomoloop.services.context import Services

if TYPE_CHECKING:
    from tomoloop.adapters.detectron2 import MaskRCNN

ModelKind = Literal["semantic", "maskrcnn", "flaws"]


class SemanticModel(NamedTuple):
    """A registered semantic network (backend torch), in eval mode."""

    network: nn.Module
    spec: ModelSpec
    version: ModelVersion


class MaskRCNNModel(NamedTuple):
    """A registered Mask R-CNN (backend detectron2), in eval mode."""

    net: MaskRCNN
    version: ModelVersion


class FlawModel(NamedTuple):
    """A registered flaw classifier (architecture flawnet), in eval mode."""

    net: FlawNet
    version: ModelVersion


_NO_CHECKPOINT = (
    "model {id} has no checkpoint (its training did not finish): "
    "train it again or pick another model"
)


def registered_version(services: Services, model_id: int, kind: ModelKind) -> ModelVersion:
    """Registered model version ``model_id``, checked to be a trained model of ``kind``
    (read only: nothing is loaded, so commands check it before they write anything).

    Raises:
        RegistryError: unknown, of another kind, or without a checkpoint.
    """
    version = services.registry.model(model_id)
    trained = version.checkpoint_uri is not None and version.checkpoint_sha256 is not None
    if kind == "flaws" and (version.architecture != "flawnet" or not trained):
        raise RegistryError(
            f"model {model_id} is not a trained flaw classifier: train one with "
            "tomoloop flaws train"
        )
    if kind == "semantic" and version.backend != "torch":
        raise RegistryError(
            f"model {model_id} is a {version.backend} model; this command needs a semantic one"
        )
    if kind == "maskrcnn" and version.backend != "detectron2":
        raise RegistryError(
            f"model {model_id} is a {version.backend} model; this command needs a Mask R-CNN "
            "(train one with tomoloop train --arch maskrcnn)"
        )
    if not trained:
        raise RegistryError(_NO_CHECKPOINT.format(id=model_id))
    return version


@overload
def load_registered_model(
    services: Services,
    model_id: int,
    device: str | torch.device = ...,
    kind: Literal["semantic"] = ...,
) -> SemanticModel: ...


@overload
def load_registered_model(
    services: Services, model_id: int, device: str | torch.device, kind: Literal["maskrcnn"]
) -> MaskRCNNModel: ...


@overload
def load_registered_model(
    services: Services, model_id: int, device: str | torch.device, kind: Literal["flaws"]
) -> FlawModel: ...


def load_registered_model(
    services: Services,
    model_id: int,
    device: str | torch.device = "cpu",
    kind: ModelKind = "semantic",
) -> SemanticModel | MaskRCNNModel | FlawModel:
    """Registered model ``model_id`` of ``kind`` (checked by :func:`registered_version`),
    verified by sha256 and rebuilt on ``device``."""
    version = registered_version(services, model_id, kind)
    assert version.checkpoint_uri is not None and version.checkpoint_sha256 is not None
    data = services.store.get_bytes(version.checkpoint_uri, version.checkpoint_sha256)
    if kind == "flaws":
        return FlawModel(load_classifier(data, torch.device(device)), version)
    if kind == "maskrcnn":
        # imported here: detectron2 loads only for a command that needs it
        from tomoloop.adapters import detectron2

        return MaskRCNNModel(detectron2.load(data, torch.device(device)), version)
    network, spec = load_model(data, device)
    return SemanticModel(network, spec, version)


def stored_network(artifact_root: str, key: str, sha256: str, device: str) -> nn.Module:
    """The semantic network of checkpoint ``key`` in the artifact store at
    ``artifact_root``, verified by sha256, on ``device`` — for a worker that reaches the
    store but not the registry."""
    network, _ = load_model(ArtifactStore(artifact_root).get_bytes(key, sha256), device)
    return network
