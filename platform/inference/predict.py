"""Prediction on slices and whole volumes: tiled with overlap and blended, streamed to disk.

A slice larger than the network's tile is cut into overlapping tiles; each tile's
probabilities are weighted by a window that falls to almost zero at its edges, so every
pixel is decided mostly by tiles that see it with full context and no seams appear.
Volumes are predicted slice by slice and written as they go (labels uint8/uint16 TIFF,
per-voxel uncertainty float16 TIFF), so they need not fit in memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import nn

from tomoloop.cores import fitting_threads
from tomoloop.inference.uncertainty import enable_dropout, entropy_map
from tomoloop.networks.layers import SIDE_MULTIPLE
from tomoloop.outputs import temp_file_beside, writing
from tomoloop.stacks.stack import Stack, axis_named
from tomoloop.stacks.window import Window, percentile_window


def blend_window(height: int, width: int | None = None) -> np.ndarray:
    """(height, width) float32 weights (square if no width): a raised cosine, ≈1 in the
    middle, small at the edges.
    """

    def ramp(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

    return np.outer(ramp(height), ramp(width or height)).astype(np.float32) + 1e-6


def tile_side(length: int, tile: int) -> int:
    """The tile side used along an image side of ``length``: ``tile``, or less for a short
    side (its length rounded up to a multiple of 16) — no work on padding.
    """
    return min(tile, -(-length // SIDE_MULTIPLE) * SIDE_MULTIPLE)


def default_overlap(tile: int) -> int:
    """Pixels by which neighbouring tiles of side ``tile`` overlap unless told otherwise:
    a quarter of the tile, enough for the blended seams to vanish.
    """
    return tile // 4


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions covering 0..length with tiles of ``tile`` overlapping by ≥ overlap."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be ≥ 0 and smaller than the tile {tile}")
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def normalise(image: np.ndarray, window: Window) -> np.ndarray:
    """Grey values → float32 in [0, 1] through a display window."""
    scaled = (image.astype(np.float32) - window.lo) / (window.hi - window.lo)
    return np.clip(np.nan_to_num(scaled), 0.0, 1.0)


@dataclass(frozen=True)
class Tiling:
    """How an (h, w) slice is cut: reflect-padded to (ph, pw), tiles of (th, tw) at
    ``origins`` (top-left corners, row-major).
    """

    h: int
    w: int
    th: int
    tw: int
    ph: int
    pw: int
    origins: tuple[tuple[int, int], ...]


def tiling(shape: tuple[int, int], tile: int, overlap: int) -> Tiling:
    """The tiles that cover an (H, W) slice with tiles of side ≤ ``tile`` overlapping by
    ``overlap`` (less on a short side).
    """
    h, w = shape
    th, tw = tile_side(h, tile), tile_side(w, tile)
    ph, pw = max(h, th), max(w, tw)
    origins = tuple(
        (y, x)
        for y in tile_origins(ph, th, min(overlap, th - 1))
        for x in tile_origins(pw, tw, min(overlap, tw - 1))
    )
    return Tiling(h, w, th, tw, ph, pw, origins)


def cut_tiles(image: np.ndarray, t: Tiling) -> np.ndarray:
    """(N, th, tw) float32 tiles of an (H, W) slice, reflect-padded (edge for a 1-px side)."""
    padded = np.pad(
        image.astype(np.float32, copy=False),
        ((0, t.ph - t.h), (0, t.pw - t.w)),
        mode="reflect" if min(t.h, t.w) > 1 else "edge",
    )
    return np.stack([padded[y : y + t.th, x : x + t.tw] for y, x in t.origins])


@torch.inference_mode()
def blend(probs: torch.Tensor, t: Tiling) -> torch.Tensor:
    """(C, H, W) float32 on ``probs``' device: (N, C, th, tw) tile probabilities summed
    under the :func:`blend_window`, tile by tile in ``t.origins`` order, and normalised —
    on a GPU the tiles never leave it.
    """
    weights = torch.from_numpy(blend_window(t.th, t.tw)).to(probs.device)
    total = probs.new_zeros((probs.shape[1], t.ph, t.pw))
    norm = probs.new_zeros((t.ph, t.pw))
    for (y, x), p in zip(t.origins, probs, strict=True):
        total[:, y : y + t.th, x : x + t.tw] += p * weights
        norm[y : y + t.th, x : x + t.tw] += weights
    return (total / norm)[:, : t.h, : t.w]


@torch.inference_mode()
def class_labels(probs: torch.Tensor) -> torch.Tensor:
    """(H, W) index of the most probable class of (C, H, W) probabilities, the first of
    equals (as ``argmax``), on their device: uint8 up to 256 classes, int32 above. Class by
    class, so no reduction runs across the strided class axis (7.6 ms against NumPy's 20.8 ms
    for 3 classes at 1000² on 2 threads).
    """
    best = probs[0].clone()
    dtype = torch.uint8 if len(probs) <= 256 else torch.int32
    labels = torch.zeros(probs.shape[1:], dtype=dtype, device=probs.device)
    for c in range(1, len(probs)):
        above = probs[c] > best
        labels.masked_fill_(above, c)
        torch.maximum(best, probs[c], out=best)
    return labels


@contextlib.contextmanager
def running(model: nn.Module, dropout: bool = False) -> Iterator[nn.Module]:
    """The model in eval mode (dropout layers on with ``dropout``: MC dropout, batch norm
    frozen) and channels-last memory format — the layout oneDNN and cuDNN convolve fastest
    (measured 1.4× at batch 32 on CPU) — with cuDNN's autotuner on (``cudnn.benchmark``:
    the first batch of each tile shape times the convolution algorithms and the fastest is
    kept; tiles repeat one shape); put back to eval, contiguous weights and the caller's
    autotuner setting after. The weights are re-laid outside inference mode, also when
    called inside it: they stay ordinary tensors, so the model can be trained after.
    """
    model.eval()
    if dropout:
        enable_dropout(model)
    _lay_out(model, torch.channels_last)
    autotune = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield model
    finally:
        torch.backends.cudnn.benchmark = autotune
        model.eval()
        _lay_out(model, torch.contiguous_format)


def _lay_out(model: nn.Module, form: torch.memory_format) -> None:
    """``model``'s weights in memory format ``form``, as ordinary (trainable) tensors."""
    with torch.inference_mode(False):
        model.to(memory_format=form)


def to_device(tiles: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, 1, th, tw) channels-last float32 tensor on ``device`` of (N, th, tw) float32
    tiles. For a GPU the tiles are staged in page-locked (pinned) host memory and copied
    without blocking, so the copy overlaps the work queued before it.
    """
    tensor = torch.from_numpy(tiles)[:, None]
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True, memory_format=torch.channels_last)


@torch.inference_mode()
def forward_tiles(
    model: nn.Module,
    tiles: np.ndarray,
    batch: int,
    device: str | torch.device,
    on_batch: Callable[[int], None] = lambda start: None,
) -> torch.Tensor:
    """(N, C, th, tw) float32 softmax probabilities, on ``device``, of (N, th, tw) tiles run
    ``batch`` at a time (:func:`to_device`, CUDA autocast on a GPU). ``on_batch(start)`` is
    called before each batch (``start`` = its first tile).
    """
    device = torch.device(device)
    parts = []
    for start in range(0, len(tiles), batch):
        on_batch(start)
        inputs = to_device(tiles[start : start + batch], device)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            parts.append(model(inputs).float().softmax(dim=1))
    return torch.cat(parts)


def _slice_probabilities(
    model: nn.Module,
    images: Sequence[np.ndarray],
    tile: int,
    overlap: int,
    batch: int,
    device: str | torch.device,
) -> list[torch.Tensor]:
    """(C, H, W) float32 class probabilities, on ``device``, of some normalised (H, W)
    slices of one shape, the tiles of all of them batched together."""
    if not images:
        return []
    t = tiling(images[0].shape, tile, overlap)
    tiles = np.concatenate([cut_tiles(image, t) for image in images])
    with running(model):
        probs = forward_tiles(model, tiles, batch, device)
    n = len(t.origins)
    return [blend(probs[k * n : (k + 1) * n], t) for k in range(len(images))]


def predict_slices(
    model: nn.Module,
    images: Sequence[np.ndarray],
    tile: int = 128,
    overlap: int = 32,
    batch: int = 32,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """(C, H, W) float32 class probabilities of each of some normalised (H, W) slices of one
    shape: as :func:`predict_slice` on each, with the tiles of all of them batched together.
    """
    return [
        p.cpu().numpy() for p in _slice_probabilities(model, images, tile, overlap, batch, device)
    ]


def predict_slice(
    model: nn.Module,
    image: np.ndarray,
    tile: int = 128,
    overlap: int = 32,
    batch: int = 8,
    device: str | torch.device = "cpu",
    dropout: bool = False,
) -> np.ndarray:
    """(C, H, W) float32 class probabilities of one normalised (H, W) slice.

    ``tile`` is the largest tile side (a fully convolutional network predicts a whole slice
    of up to tile × tile in one pass; bigger slices are cut into overlapping tiles). The
    slice is reflect-padded to whole tiles; tiles run in batches on ``device``,
    under CUDA autocast (AMP) when the device is a GPU. With ``dropout`` the network's
    dropout layers stay on (one MC-dropout sample; batch norm stays frozen).
    """
    t = tiling(image.shape, tile, overlap)
    with running(model, dropout):
        return blend(forward_tiles(model, cut_tiles(image, t), batch, device), t).cpu().numpy()


DROPOUT = (nn.Dropout, nn.Dropout2d, nn.Dropout3d)


@dataclass(frozen=True)
class DropoutCall:
    """One dropout call of a forward pass: its keep probability and the noise it draws for
    one tile — ``shape`` (1, C, 1, …) for channel dropout, the input's otherwise (rows of a
    flattened batch stay in tile order, so n tiles draw ``shape[0] * n`` rows), its dtype
    and whether it is laid out channels-last (element noise takes the input's layout, and
    torch fills it in memory order).
    """

    keep: float
    shape: tuple[int, ...]
    dtype: torch.dtype
    channels_last: bool

    def draw(self, tiles: int, device: torch.device) -> torch.Tensor:
        """The noise of ``tiles`` tiles, 0 or 1/keep, from torch's generator."""
        form = torch.channels_last if self.channels_last else torch.contiguous_format
        size = (self.shape[0] * tiles, *self.shape[1:])
        noise = torch.empty(size, dtype=self.dtype, device=device, memory_format=form)
        return noise.bernoulli_(self.keep).div_(self.keep)


def dropout_calls(model: nn.Module, tile: torch.Tensor, device: torch.device) -> list[DropoutCall]:
    """The dropout calls of one forward pass of a (1, 1, th, tw) tile, in call order
    (one module called twice counts twice); runs with dropout off, drawing nothing.
    """
    calls: list[DropoutCall] = []

    def record(module: nn.Module, inputs: tuple, _output: object) -> None:
        x, keep = inputs[0], 1.0 - float(module.p)  # type: ignore[arg-type]  # a DROPOUT: p is its float
        if isinstance(module, nn.Dropout):
            layout = x.ndim == 4 and not x.is_contiguous()
            calls.append(DropoutCall(keep, tuple(x.shape), x.dtype, layout))
        else:
            shape = (1, x.shape[1], *[1] * (x.ndim - 2))
            calls.append(DropoutCall(keep, shape, x.dtype, False))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, DROPOUT)]
    try:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            model(tile.to(device, memory_format=torch.channels_last))
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def draw_noise(
    calls: list[DropoutCall], passes: int, tiles: int, chunk: int, device: torch.device
) -> list[torch.Tensor | None]:
    """Per call, the (passes × tiles, *shape) dropout noise (0 or 1/keep; None where
    nothing is dropped) drawn from torch's generator in the order ``passes`` runs of
    :func:`predict_slice` with ``batch=chunk`` draw it: pass by pass, ``chunk`` tiles at a
    time, call by call.
    """
    drawn: list[list[torch.Tensor]] = [[] for _ in calls]
    for _ in range(passes):
        for start in range(0, tiles, chunk):
            n = min(chunk, tiles - start)
            for k, call in enumerate(calls):
                if call.keep < 1:
                    drawn[k].append(call.draw(n, device))
    return [torch.cat(d) if d else None for d in drawn]


@torch.inference_mode()
def mc_dropout_slice(
    model: nn.Module,
    image: np.ndarray,
    passes: int,
    tile: int = 128,
    overlap: int = 32,
    chunk: int = 8,
    batch: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(passes, C, H, W) float32 MC-dropout samples of one normalised (H, W) slice: the
    same as ``passes`` calls of :func:`predict_slice` with ``batch=chunk, dropout=True``
    under the same seed (the same dropout masks, drawn in the same order; equal to float
    rounding), but every pass's tiles run together, ``batch`` tiles at a time.
    """
    device = torch.device(device)
    t = tiling(image.shape, tile, overlap)
    tiles = cut_tiles(image, t)
    n = len(tiles)
    with running(model):
        calls = dropout_calls(model, torch.from_numpy(tiles[:1, None]), device)
        noise = draw_noise(calls, passes, n, chunk, device)
        where = {"start": 0, "call": 0}

        def apply(_module: nn.Module, inputs: tuple, _output: object) -> torch.Tensor:
            k, x = where["call"], inputs[0]
            where["call"] += 1
            mask = noise[k]
            if mask is None:
                return x
            rows = calls[k].shape[0]
            return x * mask[where["start"] * rows : (where["start"] + batch) * rows]

        def on_batch(start: int) -> None:
            where.update(start=start, call=0)

        modules = [m for m in model.modules() if isinstance(m, DROPOUT)]
        hooks = [m.register_forward_hook(apply) for m in modules]
        try:
            probs = forward_tiles(model, np.tile(tiles, (passes, 1, 1)), batch, device, on_batch)
        finally:
            for hook in hooks:
                hook.remove()
    samples = [blend(probs[k * n : (k + 1) * n], t) for k in range(passes)]
    return torch.stack(samples).cpu().numpy()


Predict = Callable[[list[np.ndarray]], list[torch.Tensor]]


def _predicted(
    stack: Stack, axis: str, predict: Predict, group: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(index, (C, H, W) probabilities on the device)`` of every ``axis`` slice,
    predicted ``group`` slices at a time (their tiles share batches).
    """
    images: list[np.ndarray] = []
    indices: list[int] = []
    for index, image in stack.iter_slices(axis_named(axis)):
        indices.append(index)
        images.append(image)
        if len(images) == group:
            yield from zip(indices, predict(images), strict=True)
            images, indices = [], []
    if images:
        yield from zip(indices, predict(images), strict=True)


def _write_prediction(
    stack: Stack,
    axes: tuple[str, ...],
    predict: Predict,
    group: dict[str, int],
    temps: list[Path],
    on_slice: Callable[[str, int], None],
) -> None:
    """Write the (z, y, x) labels into ``temps[0]`` and, if given, the float16 entropy into
    ``temps[1]``, predicting along ``axes`` (fused by summing probabilities). Labels and
    entropy are worked out where the probabilities are (on a GPU: only they are copied
    back, 3 bytes a voxel instead of 4 per class).
    """
    with contextlib.ExitStack() as files:
        writers = [files.enter_context(tifffile.TiffWriter(t)) for t in temps]
        if axes == ("z",):
            fused = _predicted(stack, "z", predict, group["z"])
        else:
            scratch = files.enter_context(tempfile.TemporaryDirectory(dir=temps[0].parent))
            total = _fused_probabilities(stack, axes, predict, group, Path(scratch), on_slice)
            fused = ((z, torch.from_numpy(total[:, z] / len(axes))) for z in range(stack.shape[0]))
        for z, probs in fused:
            dtype = np.uint8 if probs.shape[0] <= 256 else np.uint16
            labels = class_labels(probs).cpu().numpy().astype(dtype, copy=False)
            writers[0].write(labels, contiguous=True)
            if len(writers) > 1:
                uncertainty = entropy_map(probs).half().cpu().numpy()
                writers[1].write(uncertainty, contiguous=True)
            if axes == ("z",):
                on_slice("z", z)


@dataclass(frozen=True)
class VolumePrediction:
    """Where a volume prediction went: label TIFF and float16 entropy TIFF (if asked for),
    both (z, y, x).
    """

    labels: Path
    uncertainty: Path | None


def _reserve(path: Path) -> None:
    """Allocate a sparse file's blocks now: a full disk raises ENOSPC here instead of
    killing the process (SIGBUS) when a memory-mapped page is first written.
    """
    with path.open("r+b") as handle:
        os.posix_fallocate(handle.fileno(), 0, path.stat().st_size)


def _fused_probabilities(
    stack: Stack,
    axes: tuple[str, ...],
    predict: Predict,
    group: dict[str, int],
    scratch: Path,
    on_slice: Callable[[str, int], None],
) -> np.memmap:
    """(C, Z, Y, X) float32 sum of the probabilities predicted along each of ``axes``, in
    a file-backed array under ``scratch`` (the OS pages it; it need not fit in memory).
    """
    total: np.memmap | None = None
    for axis in axes:
        order = "zyx".index(axis)
        for index, probs in _predicted(stack, axis, predict, group[axis]):
            if total is None:
                total = np.lib.format.open_memmap(
                    scratch / "sum.npy", "w+", np.float32, (probs.shape[0], *stack.shape)
                )
                _reserve(scratch / "sum.npy")
            where: list[slice | int] = [slice(None)] * 4
            where[order + 1] = index
            total[tuple(where)] += probs.cpu().numpy()
            on_slice(axis, index)
    assert total is not None, "a stack has at least one slice"
    return total


def predict_volume(
    model: nn.Module,
    stack: Stack,
    labels_path: str | os.PathLike[str],
    uncertainty_path: str | os.PathLike[str] | None = None,
    axes: tuple[str, ...] = ("z",),
    tile: int = 128,
    overlap: int = 32,
    batch: int = 32,
    device: str | torch.device = "cpu",
    window: Window | None = None,
    on_slice: Callable[[str, int], None] = lambda axis, index: None,
) -> VolumePrediction:
    """Predict a grayscale stack slice by slice; write labels (uint8, uint16 above 256
    classes) and, if asked, per-voxel entropy (float16) as (z, y, x) TIFFs.

    ``axes=("z",)`` streams each slice's result straight to disk. With more axes (Daemi et al. 2022,
    §4, segment XY, XZ and YZ re-slices; docs/references.md) the probabilities of every axis are
    summed in a file-backed scratch array beside the output, then fused slice by slice — volumes
    larger than memory work either way. Files are written under temporary names and renamed when
    complete. ``batch`` tiles run through the network at once, cut from as many slices as fill
    it, on as many CPU threads as cores stand idle (:mod:`tomoloop.cores`). Returns the paths
    written.
    """
    unknown = set(axes) - set("zyx")
    if unknown or not axes:
        raise ValueError(f"axes {axes!r}: choose from z, y and x")
    targets = [Path(labels_path)] + ([Path(uncertainty_path)] if uncertainty_path else [])
    window = window or percentile_window(stack)

    def predict(images: list[np.ndarray]) -> list[torch.Tensor]:
        normalised = [normalise(image, window) for image in images]
        return _slice_probabilities(model, normalised, tile, overlap, batch, device)

    def slices_per_batch(axis: str) -> int:
        h, w = (side for a, side in zip("zyx", stack.shape, strict=True) if a != axis)
        return max(1, batch // len(tiling((h, w), tile, overlap).origins))

    group = {axis: slices_per_batch(axis) for axis in axes}

    with writing("--out", targets[0]):
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
        temps: list[Path] = []
        try:
            temps.extend(temp_file_beside(t) for t in targets)
            with fitting_threads():
                _write_prediction(stack, axes, predict, group, temps, on_slice)
            for temp, target in zip(temps, targets, strict=True):
                os.replace(temp, target)
        except BaseException:
            for temp in temps:
                temp.unlink(missing_ok=True)
            raise
    return VolumePrediction(targets[0], targets[1] if len(targets) > 1 else None)
