"""A trained network out of tomoloop: TorchScript (``torch.jit.load``, C++ libtorch) and
ONNX (ONNX Runtime, TensorRT, OpenVINO), each checked against PyTorch on one input.

Both take (N, C_in, tile, tile) float32 images in [0, 1] (grey values through the
volume's display window, as :func:`tomoloop.inference.predict.normalise` makes them) and
give (N, n_classes, tile, tile) logits. The batch N is free; the sides are the training
tile, the patch tomoloop itself predicts by (a transformer's token grid is fixed by
them). TorchScript is traced with PyTorch's fused attention path off, so the trace holds
plain operations; ONNX comes from ``torch.onnx.export(dynamo=True)`` (opset 18) with a
dynamic batch.

Not exportable: LRCS-Net to TorchScript — its max-unpooling checks its output size with
``torch._check_value``, which fails under tracing (torch 2.14) and scripting cannot compile
the network; its ONNX export works. A MatPhase with ``lcgar_padding=zero`` to neither — its
LCGAR runs each pixel's window in chunks, a loop a traced graph fixes to the example's size.
Everything else exports to both.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tomoloop.errors import TomoloopError
from tomoloop.networks.registry import ModelSpec

FORMATS = ("torchscript", "onnx")
TOLERANCE = 1e-4
"""Largest |exported − PyTorch| logit accepted, relative to max(1, |PyTorch logit|); float32
reorderings differ by ~1e-7 here."""
ONNX_OPSET = 18
NOT_EXPORTABLE = {("lrcsnet", "torchscript"): "max-unpooling cannot be traced or scripted"}


class ExportError(TomoloopError):
    """A network cannot be exported to a format, or its export disagrees with PyTorch."""


def example_input(spec: ModelSpec, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(batch, in_channels, tile, tile) float32 uniform in [0, 1], reproducible by seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, spec.in_channels, spec.tile, spec.tile, generator=generator)


@contextlib.contextmanager
def _plain_operations() -> Iterator[None]:
    """PyTorch's fused attention fast path off (a trace or export then records plain
    operations) and the exporters' deprecation chatter silenced."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def check_exportable(spec: ModelSpec, fmt: str) -> None:
    """Raise ExportError for an unknown format or a network that cannot take it."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: choose {' or '.join(FORMATS)}")
    reason = NOT_EXPORTABLE.get((spec.architecture, fmt))
    if spec.options.get("lcgar_padding") == "zero":
        raise ExportError(
            "a MatPhase with lcgar_padding=zero cannot be exported (its LCGAR runs each "
            "pixel's window in chunks, which a traced graph fixes to the example's size): "
            "train it with the default lcgar_padding to export it"
        )
    if reason is not None:
        raise ExportError(
            f"a {spec.architecture} cannot be exported to {fmt} ({reason}): export it as "
            f"{' or '.join(f for f in FORMATS if f != fmt)}"
        )


def to_torchscript(model: nn.Module, example: torch.Tensor) -> bytes:
    """The eval-mode ``model`` traced on ``example``, saved (``torch.jit.load`` reads it)."""
    buffer = io.BytesIO()
    with _plain_operations():
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def to_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """The eval-mode ``model`` as an ONNX model (input ``image``, output ``logits``,
    dynamic batch), serialised. The exporter's progress lines go to stderr, never into a
    command's ``--json`` document on stdout."""
    with _plain_operations(), contextlib.redirect_stdout(sys.stderr):
        program = torch.onnx.export(
            model.eval(),
            (example,),
            input_names=["image"],
            output_names=["logits"],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    assert program is not None, "the dynamo exporter returns its program"
    return program.model_proto.SerializeToString()


def run_torchscript(data: bytes, images: np.ndarray) -> np.ndarray:
    """Logits of a saved TorchScript network for (N, C, H, W) float32 images, on the CPU."""
    with warnings.catch_warnings():  # TorchScript is the format asked for, not a mistake
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.no_grad():
        return loaded(torch.from_numpy(images)).numpy()


def run_onnx(data: bytes, images: np.ndarray) -> np.ndarray:
    """Logits of a serialised ONNX network for (N, C, H, W) float32 images, by ONNX
    Runtime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": images})
    return np.asarray(logits)


def difference(exported: np.ndarray, reference: np.ndarray) -> float:
    """Largest |exported − reference| relative to max(1, |reference|)."""
    return float((np.abs(exported - reference) / np.maximum(1.0, np.abs(reference))).max())


@dataclass(frozen=True)
class Exported:
    """One export: its format, its bytes and its largest difference from PyTorch on a
    check input of another batch size than the one traced."""

    format: str
    data: bytes
    difference: float


def export_network(model: nn.Module, spec: ModelSpec, fmt: str) -> Exported:
    """Export ``model`` (as rebuilt from ``spec``, on the CPU) to ``fmt`` and check it:
    PyTorch and the export (TorchScript, or ONNX Runtime) run on the same 3-image input.

    Raises:
        ExportError: an unknown format, a network that cannot take it, or an export whose
            logits differ from PyTorch's by more than :data:`TOLERANCE`.
    """
    check_exportable(spec, fmt)
    model = model.cpu().eval()
    convert, run = (
        (to_torchscript, run_torchscript) if fmt == "torchscript" else (to_onnx, run_onnx)
    )
    data = convert(model, example_input(spec, batch=2))
    check = example_input(spec, batch=3, seed=1)
    with torch.no_grad():
        reference = model(check).numpy()
    found = difference(run(data, check.numpy()), reference)
    if not found <= TOLERANCE:
        raise ExportError(
            f"the {fmt} export of this {spec.architecture} differs from PyTorch by {found:.2e} "
            f"(> {TOLERANCE:.0e}): it is not written; report it with the model id"
        )
    return Exported(fmt, data, found)
