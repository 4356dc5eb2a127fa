"""Options several commands share, and the parsers of option values.

A value that cannot be used raises a :class:`~tomoloop.errors.TomoloopError` naming the
option and showing a value that works.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from tomoloop.errors import TomoloopError

STACK_FORMATS = (
    "TIFF (a path or a URL such as s3://bucket/scan.tif), HDF5 (FILE.h5[:/dataset]), Zarr / "
    "OME-Zarr, a folder of slices, or raw FILE:ZxYxX:DTYPE (docs/formats.md)"
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
VoxelOpt = Annotated[
    str | None,
    typer.Option(
        "--voxel-size", help="Voxel size in µm: one value or 'z,y,x' (overrides metadata)."
    ),
]
DatasetOpt = Annotated[str, typer.Option(help="Dataset name.")]


def _positive(value: float) -> float:
    if value <= 0:
        raise typer.BadParameter(f"{value}: must be > 0")
    return value


BinOpt = Annotated[float, typer.Option(help="Size-distribution bin, µm (> 0).", callback=_positive)]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]
MinGapOpt = Annotated[int, typer.Option(help="Minimum index gap between chosen slices.")]
PerVolumeOpt = Annotated[
    int | None, typer.Option(help="At most this many slices of one volume per round.")
]
PortOpt = Annotated[int, typer.Option(help="Port on 127.0.0.1.")]
MethodOpt = Annotated[str, typer.Option(help="entropy, margin, bald, tta or ensemble.")]
AggregationOpt = Annotated[str, typer.Option(help="mean, top_percentile or foreground_weighted.")]
PassesOpt = Annotated[int, typer.Option(help="MC-dropout passes for bald.")]
StrategyOpt = Annotated[
    str,
    typer.Option(
        help="random, foreground_random, entropy, margin, bald, tta, ensemble, disagreement, "
        "coreset, hybrid."
    ),
]
UnitOpt = Annotated[
    str,
    typer.Option(help="slice (whole slices) or region (square tiles: sparse labels)."),
]
RegionOpt = Annotated[int, typer.Option(help="Side of a region in pixels (--unit region).")]
BudgetPxOpt = Annotated[
    int | None,
    typer.Option(
        help="Labelled pixels per round with --unit region (default: --budget regions' worth)."
    ),
]
MinDistanceOpt = Annotated[
    float | None,
    typer.Option(
        help="Minimum distance in pixels between the centres of two regions of one slice"
        " (default: one region side)."
    ),
]
VolumeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--volume",
        help="Choose only from this volume's slices (repeat for several; default all). "
        "Training still uses every label of the dataset.",
    ),
]
MarginOpt = Annotated[float, typer.Option(help="mIoU gain the challenger must exceed.")]
ToleranceOpt = Annotated[
    float, typer.Option(help="Largest |predicted − gold| phase volume fraction (0–1).")
]


def parse_voxel_size(text: str | None) -> tuple[float, float, float] | None:
    """'0.5' → (0.5, 0.5, 0.5); '1,0.5,0.5' → (1, 0.5, 0.5); '64nm' → 0.064 µm each.
    Each length must be finite, > 0 and at most 1e6 µm (1 m).
    """
    from tomoloop.stacks.stack import MAX_VOXEL_UM, UM_PER_UNIT, voxel_length_ok

    if text is None:
        return None
    body = text.strip()
    unit = body[len(body.rstrip("abcdefghijklmnopqrstuvwxyzµμÅ")) :].lower()
    factor = UM_PER_UNIT.get(unit, 1.0 if unit == "" else float("nan"))
    body = body[: len(body) - len(unit)]
    try:
        parts = [float(p) * factor for p in body.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or not all(map(voxel_length_ok, parts)):
        raise TomoloopError(
            f"--voxel-size {text!r}: give one finite length > 0 and ≤ {MAX_VOXEL_UM:g} µm or "
            "'z,y,x', in µm unless it ends in nm / mm (e.g. 0.064, 64nm, 0.1,0.064,0.064um)"
        )
    return (parts[0], parts[1], parts[2])


def parse_pairs(items: list[str] | None, flag: str, example: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}``; a clear error names the bad item."""
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise TomoloopError(f"{flag} {item!r}: write KEY=VALUE, e.g. {flag} {example}")
        pairs[key] = value
    return pairs


def parse_options(items: list[str] | None) -> dict:
    """``["base=8", "dropout=0.2"]`` → network options (ints, floats or strings)."""
    options: dict = {}
    for key, raw in parse_pairs(items, "--option", "base=8").items():
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def stack_files(
    sources: Mapping[str, str | os.PathLike[str] | None],
) -> dict[str, Path | None]:
    """The local file or folder each stack source reads (``scan.h5:/exchange/data`` →
    ``scan.h5``; ``None`` for a URL, which no local output can overwrite): the inputs
    :func:`tomoloop.outputs.check_outputs` keeps outputs away from."""
    from tomoloop.stacks.opener import source_path
    from tomoloop.stacks.remote import is_url

    return {name: None if s is None or is_url(s) else source_path(s) for name, s in sources.items()}
