"""The registry of semantic segmentation networks by name (``--arch NAME``), and the
spec and checkpoint format that rebuild a trained one.

Every network maps (N, C_in, H, W) images to (N, n_classes, H, W) logits, with H and W
divisible by 16, and keeps its dropout layers usable at inference for MC dropout.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from tomoloop.checkpoints import read_checkpoint
from tomoloop.errors import TomoloopError
from tomoloop.networks.enet import ENet
from tomoloop.networks.lrcsnet import LRCSNet
from tomoloop.networks.matphase import MatPhase
from tomoloop.networks.transforcnn import TransforCNN
from tomoloop.networks.unet import UNet
from tomoloop.networks.ynet import YNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "ynet": YNet,
    "transforcnn": TransforCNN,
    "enet": ENet.default,
    "lrcsnet": LRCSNet,
    "matphase": MatPhase,
}


def build_model(name: str, in_channels: int = 1, n_classes: int = 2, **options: Any) -> nn.Module:
    """A network by registry name, e.g. ``build_model("unet", 1, 3)``.

    Raises:
        TomoloopError: an unknown architecture or option, or an option value of another
            kind than its default (``base=abc`` where an integer goes).
    """
    if name not in MODELS:
        raise TomoloopError(
            f"unknown architecture {name!r}: choose one of {', '.join(sorted(MODELS))}"
        )
    check_options(name, options)
    try:
        return MODELS[name](in_channels=in_channels, n_classes=n_classes, **options)
    except (TypeError, ValueError) as exc:  # a value the network itself refuses
        raise TomoloopError(f"{name} options {options}: {exc}") from None


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` is of the kind of ``default`` (an int is a float; a bool no int)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def check_options(name: str, options: dict) -> None:
    """Refuse options network ``name`` does not take, and values of another kind than the
    option's default (options without a plain default are left to the network).

    Raises:
        TomoloopError: naming the option and what it takes.
    """
    parameters = inspect.signature(MODELS[name]).parameters
    accepted = [p for p in parameters if p not in ("self", "cls", "in_channels", "n_classes")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TomoloopError(f"{name} does not take options {unknown}; it takes {accepted}")
    for key, value in options.items():
        default = parameters[key].default
        if type(default) in _KINDS and not _fits(value, default):
            raise TomoloopError(
                f"{name} option {key}={value!r}: give {_KINDS[type(default)]} (the default "
                f"is {default!r})"
            )


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild and run a trained network besides its weights;
    ``tile`` is the patch side it was trained on. Prediction tiles by it (as nnU-Net
    does): networks learn position cues from the borders of their training patches, so a
    whole-slice pass can disagree badly with patch-wise predictions — measured here on a
    toy volume, test mIoU 0.43 whole-slice vs 0.996 at the training patch.
    """

    architecture: str
    in_channels: int
    n_classes: int
    options: dict = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    tile: int = 128

    def build(self) -> nn.Module:
        return build_model(self.architecture, self.in_channels, self.n_classes, **self.options)


def save_model(model: nn.Module, spec: ModelSpec) -> bytes:
    """A checkpoint as bytes: the spec and the weights (CPU tensors), loadable with
    ``torch.load(weights_only=True)``.
    """
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"spec": asdict(spec), "state": state}, buffer)
    return buffer.getvalue()


def load_model(data: bytes, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild a network saved by :func:`save_model`, in eval mode on ``device``."""
    saved = read_checkpoint(data, "the model checkpoint")
    try:
        raw = saved["spec"]
        spec = ModelSpec(**{**raw, "class_names": tuple(raw.get("class_names", ()))})
    except Exception as exc:
        raise TomoloopError(f"not a tomoloop model checkpoint: {exc}") from exc
    model = spec.build()
    try:
        model.load_state_dict(saved["state"])
    except RuntimeError as exc:
        raise TomoloopError(
            f"the checkpoint's weights do not fit a {spec.architecture} with options "
            f"{spec.options}: {str(exc)[:300]}"
        ) from exc
    return model.to(device).eval(), spec


def transfer_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy every tensor of ``state`` whose name and shape match into ``model`` (transfer learning,
    Su et al. 2022, abstract; docs/references.md); the names of the model's tensors left as
    initialised (e.g. a head for another number of classes).
    """
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise TomoloopError("the parent model shares no weights with this architecture")
    model.load_state_dict(matching, strict=False)
    return sorted(set(own) - set(matching))


ENCODER = "encoder"  # the --freeze name every network answers to (its ``encoder_prefixes``)


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> int:
    """Stop gradients of parameters whose names start with any prefix (e.g. ``down`` for
    the U-Net encoder), and keep the running statistics of batch norm layers there fixed
    (momentum 0); how many parameter tensors were frozen. The prefix ``encoder`` means the
    network's encoder, whatever its parameters are called (its ``encoder_prefixes``).
    """
    prefixes = tuple(
        name
        for prefix in prefixes
        for name in (
            getattr(model, "encoder_prefixes", (prefix,)) if prefix == ENCODER else (prefix,)
        )
    )
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            tops = sorted({name.split(".")[0] for name in names})
            raise TomoloopError(
                f"no parameters start with {prefix!r}: try {ENCODER} or one of {tops}"
            )
    frozen = 0
    for name, parameter in model.named_parameters():
        if name.startswith(prefixes):
            parameter.requires_grad_(False)
            frozen += 1
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and name.startswith(prefixes):
            module.momentum = 0.0
    return frozen
