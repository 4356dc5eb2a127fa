"""The ``tomoloop`` command line.

Every command that reports results takes ``--json`` and then prints exactly one JSON
document on stdout; otherwise it prints tables for people. Errors a user can fix are
printed as one message, without a traceback, and the exit code is non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click

from tomoloop import lifeline
from tomoloop.db.views import (
    dataset_row,
    model_row,
    review_row,
    round_row,
    run_row,
    volume_row,
)
from tomoloop.errors import TomoloopError

app = typer.Typer(
    help="tomoloop: active-learning segmentation of 3D X-ray CT and FIB-SEM stacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
coco_app = typer.Typer(
    help="Convert label stacks to COCO instances and semantic masks.", no_args_is_help=True
)
stack_app = typer.Typer(help="Inspect grayscale and label stacks.", no_args_is_help=True)
db_app = typer.Typer(
    help="The SQL registry's schema (TOMOLOOP_DATABASE_URL) and unreferenced artifacts.",
    no_args_is_help=True,
)
registry_app = typer.Typer(help="Query the registry (read-only).", no_args_is_help=True)
labelstudio_app = typer.Typer(
    help="Label Studio: the local server, pushing rounds, pulling annotations.",
    no_args_is_help=True,
)
app.add_typer(coco_app, name="coco")
app.add_typer(stack_app, name="stack")
app.add_typer(db_app, name="db")
app.add_typer(registry_app, name="registry")
app.add_typer(labelstudio_app, name="labelstudio")
review_app = typer.Typer(
    help="The review tier: labels a second person approves or corrects.", no_args_is_help=True
)
app.add_typer(review_app, name="review")
flaws_app = typer.Typer(
    help="The flawed-particle classifier (Daemi et al. 2022, §4).", no_args_is_help=True
)
app.add_typer(flaws_app, name="flaws")
benchmark_app = typer.Typer(help="Benchmarks of the loop.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")

out = Console()
err = Console(stderr=True)



class _Request:
    """What the running command asked for that its error report needs to know."""

    json = False


def _note_json(value: bool) -> bool:
    """``--json`` callback: an error is then also reported as JSON on stdout."""
    _Request.json = value
    return value


JsonFlag = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout.", callback=_note_json),
]
VoxelOpt = Annotated[
    str | None,
    typer.Option(
        "--voxel-size", help="Voxel size in µm: one value or 'z,y,x' (overrides metadata)."
    ),
]


def parse_voxel_size(text: str | None) -> tuple[float, float, float] | None:
    """'0.5' → (0.5, 0.5, 0.5); '1,0.5,0.5' → (1, 0.5, 0.5); '64nm' → 0.064 µm each.
    Each length must be finite, > 0 and at most 1e6 µm (1 m).
    """
    from tomoloop.stacks.tiff import MAX_VOXEL_UM, UM_PER_UNIT, voxel_length_ok

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


def progress_bar(disable: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=disable or not err.is_terminal,  # a log file gets no bar and no blank line
        transient=True,
    )


def emit_json(document: dict) -> None:
    sys.stdout.write(json.dumps(document, default=str) + "\n")


@stack_app.command("info")
def stack_info(
    path: Annotated[Path, typer.Argument(help="TIFF stack (multipage, ImageJ or OME).")],
    voxel_size: VoxelOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Shape, dtype and voxel size of a stack, read from its header only."""
    from tomoloop.stacks.tiff import open_stack

    with open_stack(path, parse_voxel_size(voxel_size)) as stack:
        info = {
            "path": str(stack.path),
            "shape_zyx": list(stack.shape),
            "dtype": str(stack.dtype),
            "voxel_size_um": stack.voxel_size,
        }
    if as_json:
        emit_json(info)
        return
    table = Table(show_header=False)
    for key, value in info.items():
        table.add_row(key, str(value))
    out.print(table)


@coco_app.command("export")
def coco_export(
    dataset: Annotated[str, typer.Option(help="NAME or NAME@VERSION (default latest).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (must be new).")],
    as_json: JsonFlag = False,
) -> None:
    """Unpack a registered dataset version's COCO export (verified by sha256)."""
    from tomoloop.adapters.artifacts import ArtifactStore
    from tomoloop.config import Settings
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.stacks.archive import unzip_to

    check_outputs({}, [Output("--out", out_dir, folder=True)])
    with _database_errors():
        found = _dataset(_open_registry(), dataset)
    name = found.name
    coco = found.artifacts.get("coco")
    if coco is None:
        raise TomoloopError(f"dataset {name}@{found.version} has no COCO export")
    data = ArtifactStore(Settings().artifact_root).get_bytes(coco["uri"], coco["sha256"])
    files = unzip_to(data, out_dir)
    result = {"dataset": name, "version": found.version, "out_dir": str(out_dir), "files": files}
    if as_json:
        emit_json(result)
    else:
        out.print(f"[green]✓[/] {name}@{found.version}: {files} files in {out_dir}")


@coco_app.command("from-stack")
def coco_from_stack(
    labels: Annotated[
        Path, typer.Option("--labels", help="Label stack (binarized or multiphase).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (must be new or empty).")],
    gray: Annotated[
        Path | None, typer.Option("--gray", help="Grayscale stack: exported as 8-bit PNG images.")
    ] = None,
    phase: Annotated[
        list[str] | None,
        typer.Option(
            "--phase",
            help="Phase (name or value) whose components become instances; "
            "repeat for several. Default: every phase but value 0.",
        ),
    ] = None,
    phases: Annotated[
        str | None,
        typer.Option(
            "--phases",
            help="Phase map NAME=VALUE,... e.g. 'pore=0,nmc=1,cbd=2'. "
            "Default: the values found in the stack.",
        ),
    ] = None,
    min_area: Annotated[int, typer.Option(help="Drop components smaller than this (pixels).")] = 0,
    connectivity: Annotated[int, typer.Option(help="2D connectivity: 4 or 8.")] = 8,
    split: Annotated[
        str | None, typer.Option(help="train,val,test fractions, e.g. 0.8,0.1,0.1.")
    ] = None,
    gap: Annotated[int, typer.Option(help="Slices left out where two splits meet.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the split's block shuffle.")] = 0,
    axis: Annotated[str, typer.Option(help="Slice along z (XY), y (XZ) or x (YZ).")] = "z",
    polygons: Annotated[
        bool, typer.Option("--polygons", help="Write polygons (approximate) instead of RLE.")
    ] = False,
    particle_ids: Annotated[
        bool, typer.Option("--particle-ids", help="Add the 3D particle id (cc3d) to annotations.")
    ] = False,
    masks: Annotated[
        bool, typer.Option("--masks/--no-masks", help="Write class-index mask PNGs.")
    ] = True,
    workers: Annotated[
        int | None, typer.Option(help="Worker threads (default: one per CPU core).")
    ] = None,
    voxel_size: VoxelOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output folder.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Turn every slice into a COCO image and every connected component into an instance."""
    from tomoloop.coco.convert import CocoOptions, convert_stack
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.labels.splits import parse_fractions
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.stacks.tiff import AXES, open_stack, scan_label_values

    if connectivity not in (4, 8):
        raise TomoloopError(f"--connectivity {connectivity}: use 4 or 8")
    if axis not in AXES:
        raise TomoloopError(f"--axis {axis!r}: use z, y or x")
    if min_area < 0 or gap < 0 or (workers is not None and workers < 1):
        raise TomoloopError("--min-area and --gap must be ≥ 0, --workers ≥ 1")
    fractions = parse_fractions(split) if split else None
    size = parse_voxel_size(voxel_size)
    phase_map = PhaseMap.parse(phases) if phases else None
    check_outputs(
        {"--labels": labels, "--gray": gray},
        [Output("--out", out_dir, folder=True, replaces=overwrite)],
    )
    with open_stack(labels, size) as label_stack:
        gray_stack = open_stack(gray, size) if gray is not None else None
        try:
            if phase_map is None:
                phase_map = PhaseMap.from_values(scan_label_values(label_stack))
            options = CocoOptions(
                instance_phases=tuple(phase_map.value(p) for p in phase or ()),
                connectivity=connectivity,  # type: ignore[arg-type]
                min_area=min_area,
                polygons=polygons,
                particle_ids=particle_ids,
                axis=axis,  # type: ignore[arg-type]
                split=fractions,
                gap=gap,
                seed=seed,
                semantic_masks=masks,
                workers=workers,
            )
            n = label_stack.shape["zyx".index(axis)]
            with progress_bar(disable=as_json) as bar:
                task = bar.add_task(f"{labels.name} → COCO", total=n)
                summary = convert_stack(
                    label_stack,
                    out_dir,
                    phase_map,
                    options,
                    gray=gray_stack,
                    overwrite=overwrite,
                    on_slice=lambda _: bar.advance(task),
                )
        finally:
            if gray_stack is not None:
                gray_stack.close()
    result = summary.to_dict()
    if as_json:
        emit_json(result)
        return
    counts = ", ".join(f"{k} {v}" for k, v in summary.instances.items())
    out.print(
        f"[green]✓[/] {summary.slices} slices → {sum(summary.instances.values())} instances "
        f"({counts}) of {', '.join(summary.categories)} in {summary.out_dir} "
        f"[dim]({result['slices_per_s']:.0f} slices/s, {summary.removed_by_min_area} removed "
        "by --min-area)[/]"
    )


def _registry_engine():
    from tomoloop.config import Settings
    from tomoloop.db.engine import make_engine

    return make_engine(Settings().registry_url)


@contextmanager
def _database_errors() -> Iterator[None]:
    """Turn "cannot connect" into a TomoloopError that says what to check."""
    from sqlalchemy.exc import DatabaseError, OperationalError

    try:
        yield
    except OperationalError as exc:
        raise TomoloopError(
            f"cannot reach the registry database ({exc.orig}): check TOMOLOOP_DATABASE_URL "
            "and that the server is running"
        ) from exc
    except DatabaseError as exc:
        if type(exc) is not DatabaseError:  # integrity errors and the like are bugs
            raise
        raise TomoloopError(
            f"the registry database is damaged ({exc.orig}): restore it from a backup"
        ) from exc


def _report_revision(engine, as_json: bool) -> None:
    from tomoloop.db.engine import current_revision

    with _database_errors():
        revision = current_revision(engine)
    url = engine.url.render_as_string(hide_password=True)
    if as_json:
        emit_json({"url": url, "revision": revision})
    else:
        out.print(f"registry {url} at revision {revision or '(empty)'}")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    as_json: JsonFlag = False,
) -> None:
    """Create or migrate the registry schema up to a revision."""
    from tomoloop.db.engine import check_revision, upgrade

    check_revision(revision)
    engine = _registry_engine()
    with _database_errors():
        upgrade(engine, revision)
    _report_revision(engine, as_json)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Option(help="Target revision (-1: one step).")] = "-1",
    as_json: JsonFlag = False,
) -> None:
    """Migrate the registry schema down (default one step)."""
    from tomoloop.db.engine import check_revision, downgrade

    check_revision(revision)
    engine = _registry_engine()
    with _database_errors():
        downgrade(engine, revision)
    _report_revision(engine, as_json)


@db_app.command("current")
def db_current(as_json: JsonFlag = False) -> None:
    """The registry's schema revision (an embedded registry not created yet: none)."""
    from tomoloop.config import Settings
    from tomoloop.db.engine import make_engine, sqlite_file

    path = sqlite_file(Settings().registry_url)
    absent = path is not None and not path.exists()
    _report_revision(make_engine("sqlite://") if absent else _registry_engine(), as_json)


@db_app.command("gc")
def db_gc(
    grace: Annotated[
        str, typer.Option(help="Keep files modified less than this long ago (90s, 30m, 1h, 2d).")
    ] = "1h",
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove them (default: only list them).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """List (or with --delete remove) artifacts no registry row refers to and temporary
    leftovers of killed writes, older than --grace."""
    import time

    from tomoloop.adapters.artifacts import ArtifactStore
    from tomoloop.config import Settings
    from tomoloop.gc import check_registry_matches, collectable, parse_duration

    grace_s = parse_duration(grace, "--grace")
    store = ArtifactStore(Settings().artifact_root)
    files = store.entries()  # listed before the references are read: a file stored later
    with _database_errors():  # is not listed, one committed later is read as referenced
        referenced = _open_registry().artifact_keys()
    chosen = collectable(files, referenced, time.time(), grace_s)
    if delete:
        check_registry_matches(referenced, chosen)
        for stored in chosen:
            store.remove(stored.key)
    total = sum(f.size for f in chosen)
    if as_json:
        rows = [{"key": f.key, "bytes": f.size, "mtime": f.mtime} for f in chosen]
        emit_json({"removed" if delete else "would_remove": rows, "bytes": total})
        return
    for stored in chosen:
        out.print(f"{stored.key}  {stored.size:,} B", highlight=False, soft_wrap=True)
    verb = "removed" if delete else "would remove"
    hint = "" if delete or not chosen else "; run again with --delete to remove them"
    out.print(
        f"{verb} {len(chosen)} unreferenced file(s), {total:,} bytes, older than {grace} "
        f"from {store.url}{hint}",
        highlight=False,
        soft_wrap=True,
    )


def _open_registry(create: bool = False):
    """The registry; ``create=False`` (commands that only read) creates no file when the
    embedded registry does not exist yet (it reads as empty)."""
    from tomoloop.config import Settings
    from tomoloop.db.registry import Registry

    return Registry.from_url(Settings().registry_url, create)


def print_rows(title: str, rows: list[dict], as_json: bool) -> None:
    """One JSON list on stdout, or a table for people."""
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str) + "\n")
        return
    table = Table(title=title)
    for key in rows[0] if rows else ["(none)"]:
        table.add_column(key)
    for row in rows:
        table.add_row(
            *(
                json.dumps(v, default=str) if isinstance(v, dict | list) else str(v)
                for v in row.values()
            )
        )
    out.print(table)


@registry_app.command("volumes")
def registry_volumes(as_json: JsonFlag = False) -> None:
    """Registered volumes."""
    with _database_errors():
        rows = [volume_row(v) for v in _open_registry().volumes()]
    print_rows("volumes", rows, as_json)


@registry_app.command("datasets")
def registry_datasets(as_json: JsonFlag = False) -> None:
    """Dataset versions with their annotation counts per split and tier, and the pixels
    their labels label per split."""
    with _database_errors():
        registry = _open_registry()
        rows = [dataset_row(registry, d) for d in registry.datasets()]
    print_rows("datasets", rows, as_json)


@registry_app.command("refresh")
def registry_refresh(
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    as_json: JsonFlag = False,
) -> None:
    """Freeze the next version of a dataset: its slices and splits, each slice with its
    best labels now (pulled corrections, reviews, drawn particles); the latest version
    when nothing changed."""
    with _database_errors():
        registry = _open_registry(create=True)
        row = dataset_row(registry, registry.refresh_dataset(dataset))
    print_rows("datasets", [row], as_json)


@registry_app.command("models")
def registry_models(as_json: JsonFlag = False) -> None:
    """Model versions with stage, training data and metrics."""
    with _database_errors():
        registry = _open_registry()
        rows = [model_row(registry, m) for m in registry.models()]
    print_rows("models", rows, as_json)


@registry_app.command("rounds")
def registry_rounds(as_json: JsonFlag = False) -> None:
    """Active-learning rounds with their items per state."""
    with _database_errors():
        rows = [round_row(r, items) for r, items in _open_registry().rounds()]
    print_rows("rounds", rows, as_json)


@registry_app.command("runs")
def registry_runs(as_json: JsonFlag = False) -> None:
    """Training runs; a ``running`` one whose process is gone (killed: same host and its
    pid dead or reused, or no heartbeat for 10 min from another host) is marked
    ``failed`` first, with the reason."""
    from tomoloop.processes import gone_reason

    with _database_errors():
        registry = _open_registry()
        registry.fail_gone_runs(gone_reason)
        rows = [run_row(r) for r in registry.runs()]
    print_rows("runs", rows, as_json)


@registry_app.command("show")
def registry_show(
    kind: Annotated[str, typer.Argument(help="volume, dataset or model.")],
    ref: Annotated[str, typer.Argument(help="An id; for datasets also NAME or NAME@VERSION.")],
    as_json: JsonFlag = False,
) -> None:
    """One volume, dataset version or model version."""
    with _database_errors():
        registry = _open_registry()
        if kind == "volume":
            row = volume_row(registry.volume(_int_ref(ref)))
        elif kind == "dataset":
            found = registry.dataset_version(int(ref)) if ref.isdigit() else _dataset(registry, ref)
            row = dataset_row(registry, found)
        elif kind == "model":
            row = model_row(registry, registry.model(_int_ref(ref)))
        else:
            raise TomoloopError(f"registry show {kind!r}: use volume, dataset or model")
    print_rows(kind, [row], as_json)


def _dataset(registry, ref: str):
    """A dataset version from ``NAME`` (latest) or ``NAME@VERSION``."""
    name, _, version = ref.partition("@")
    return registry.dataset(name, _int_ref(version) if version else None)


def _int_ref(ref: str) -> int:
    if not ref.isdigit():
        raise TomoloopError(f"{ref!r} is not an id: give the number the listing shows")
    return int(ref)


@registry_app.command("lineage")
def registry_lineage(
    model_id: Annotated[int, typer.Argument(help="Model version id.")],
    as_json: JsonFlag = False,
) -> None:
    """Where a model came from: ancestors, dataset version, labels by tier, volumes."""
    with _database_errors():
        lineage = _open_registry().lineage(model_id)
    print_rows("lineage", [asdict(lineage)], as_json)


def parse_pairs(items: list[str] | None, flag: str, example: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}``; a clear error names the bad item."""
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise TomoloopError(f"{flag} {item!r}: write KEY=VALUE, e.g. {flag} {example}")
        pairs[key] = value
    return pairs


def _print_result(title: str, result: dict, as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    out.print(table)


@app.command()
def ingest(
    gray: Annotated[Path, typer.Argument(help="Grayscale stack (TIFF).")],
    labels: Annotated[Path, typer.Option("--labels", help="Label stack of the same shape.")],
    name: Annotated[
        str, typer.Option("--name", help="Volume name (and dataset name without --add-to).")
    ],
    phases: Annotated[str, typer.Option("--phases", help="Phase map, e.g. pore=0,nmc=1,cbd=2.")],
    phase: Annotated[
        list[str] | None, typer.Option(help="Instance phase(s) for COCO; default all but 0.")
    ] = None,
    split: Annotated[str, typer.Option(help="train,val,test fractions.")] = "0.8,0.1,0.1",
    material: Annotated[str, typer.Option(help="Material description.")] = "",
    voxel_size: VoxelOpt = None,
    add_to: Annotated[
        str | None,
        typer.Option(
            "--add-to",
            help="Add the volume to this existing dataset: its next version holds the "
            "previous one's slices and this volume's, split by --split on their own.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register stacks in the registry: volume, slices, auto labels, COCO, dataset v1 (or,
    with --add-to, the dataset's next version with this volume added)."""
    from tomoloop.flows.ingest import ingest as ingest_flow
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.labels.splits import check_split_fills, parse_fractions
    from tomoloop.names import check_name
    from tomoloop.stacks.tiff import open_stack

    check_name(name, "--name")
    if add_to is not None:
        check_name(add_to, "--add-to")
    PhaseMap.parse(phases)
    fractions = parse_fractions(split)
    size = parse_voxel_size(voxel_size)
    for path in (gray, labels):  # unreadable files: a clear line before the flow starts
        open_stack(path).close()
    with open_stack(gray) as stack:
        check_split_fills(stack.shape[0], fractions)
    with _database_errors():
        result = ingest_flow(
            gray=str(gray),
            labels=str(labels),
            name=name,
            phases=phases,
            voxel_size=size,
            split=fractions,
            instance_phases=tuple(phase or ()),
            material=material,
            add_to=add_to,
        )
    _print_result(f"ingested {name}", result, as_json)


def parse_options(items: list[str] | None) -> dict:
    """``["base=8", "dropout=0.2"]`` → network options (ints, floats or strings)."""
    options: dict = {}
    for key, raw in parse_pairs(items, "--option", "base=8").items():
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def _summary_table(title: str, result: dict) -> None:
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        if key != "per_class":
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)
    per_class = result.get("per_class")
    if per_class:
        classes = Table(title="per class")
        for column in ("class", *next(iter(per_class.values()))):
            classes.add_column(column)
        for name, values in per_class.items():
            classes.add_row(name, *(f"{v:.4f}" for v in values.values()))
        out.print(classes)


DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="NAME or NAME@VERSION (default latest).")],
    arch: Annotated[
        str, typer.Option(help="Architecture, e.g. unet, ynet, matphase, maskrcnn.")
    ] = "unet",
    epochs: Annotated[int, typer.Option(help="Most epochs to train.")] = 30,
    patch: Annotated[int, typer.Option(help="Patch side in pixels (multiple of 16).")] = 128,
    batch: Annotated[
        int | None, typer.Option(help="Patches (semantic, 8) or images (maskrcnn, 2) per step.")
    ] = None,
    patches_per_epoch: Annotated[int, typer.Option(help="Random patches per epoch.")] = 256,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Learning rate (semantic AdamW 1e-3; maskrcnn SGD 1e-4, Daemi et al. 2022)."
        ),
    ] = None,
    loss: Annotated[
        str, typer.Option(help="ce, bce, balanced_ce, dice, tversky, focal_tversky.")
    ] = "ce",
    patience: Annotated[int, typer.Option(help="Epochs without val gain before stopping.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: DeviceOpt = "auto",
    parent: Annotated[
        int | None, typer.Option("--from", help="Fine-tune this registered model version.")
    ] = None,
    freeze: Annotated[
        list[str] | None, typer.Option(help="Freeze parameters with this name prefix.")
    ] = None,
    tier_weights: Annotated[
        str, typer.Option(help="e.g. auto=1,annotator=2,expert=4 (defaults shown).")
    ] = "",
    option: Annotated[
        list[str] | None, typer.Option(help="Network option KEY=VALUE, e.g. base=8.")
    ] = None,
    no_augment: Annotated[bool, typer.Option(help="Switch augmentation off.")] = False,
    row_removal: Annotated[
        int, typer.Option(help="Add K row-removed copies of each slice (Tabassum et al. n.d.: 10).")
    ] = 0,
    exclusive: Annotated[
        list[str] | None,
        typer.Option(
            help="Phases that cannot touch, A:B (Tabassum et al. n.d. kNN label smoothing)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: dataset).")] = None,
    iterations: Annotated[int, typer.Option(help="maskrcnn: optimiser steps.")] = 3000,
    depth: Annotated[int, typer.Option(help="maskrcnn: ResNet depth 18, 34, 50 or 101.")] = 101,
    norm: Annotated[
        str, typer.Option(help="maskrcnn: GN (from scratch) or FrozenBN (with --weights).")
    ] = "GN",
    weights: Annotated[
        Path | None, typer.Option(help="maskrcnn: local pretrained checkpoint (no download).")
    ] = None,
    min_size: Annotated[int, typer.Option(help="maskrcnn: shorter image side, pixels.")] = 512,
    instances: Annotated[
        list[str] | None,
        typer.Option(help="maskrcnn: phase whose particles are instances (default all but 1st)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a semantic network or a Mask R-CNN on a dataset version and register it as a
    candidate.

    Run the same command again after a crash and it resumes from its last epoch
    (checkpoint, for maskrcnn).
    """
    from tomoloop.config import Settings
    from tomoloop.flows.train import train_semantic
    from tomoloop.names import check_name
    from tomoloop.networks.registry import MODELS
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.training.data import NO_AUGMENTATION

    if name is not None:
        check_name(name, "--name")
    runs = Output("the run folder", Settings().home / "runs", folder=True)
    check_outputs({"--weights": weights}, [runs])
    given = {k: v for k, v in (("lr", lr), ("batch", batch)) if v is not None}  # else defaults
    if arch == "maskrcnn":
        maskrcnn = {
            "iterations": iterations,
            "depth": depth,
            "norm": norm,
            "weights": str(weights or ""),
            "min_size": min_size,
            "max_size": 2 * min_size,
            "seed": seed,
            **given,
        }
        _train_maskrcnn(dataset, maskrcnn, tuple(instances or ()), name, device, as_json)
        return
    if arch not in MODELS:
        raise TomoloopError(
            f"unknown architecture {arch!r}: choose one of {', '.join(MODELS)}, maskrcnn"
        )
    config = {
        "epochs": epochs,
        "patch": patch,
        "patches_per_epoch": patches_per_epoch,
        "loss": loss,
        "patience": patience,
        "seed": seed,
        "overlap": patch // 4,
        "row_removal": row_removal,
        "exclusive": [pair.split(":") for pair in exclusive or []],
        **given,
    }
    if no_augment:
        config["augmentation"] = asdict(NO_AUGMENTATION)
    _check_train_options(config, device, tier_weights)
    with _database_errors():
        found = _dataset(_open_registry(), dataset)
        result = train_semantic(
            found.id,
            arch,
            name=name,
            config=config,
            options=parse_options(option),
            device=device,
            parent=parent,
            freeze_prefixes=tuple(freeze or ()),
            tier_weights=tier_weights,
        )
    if as_json:
        emit_json(result)
    else:
        _summary_table(f"model version {result['model_version']}", result)


def _check_train_options(config: dict, device: str, tier_weights: str) -> None:
    """Refuse bad semantic training options before the flow starts (it checks them again
    before it registers anything)."""
    from tomoloop.training.data import parse_tier_weights
    from tomoloop.training.trainer import TrainConfig, resolve_device

    TrainConfig(**{k: v for k, v in config.items() if k not in ("exclusive", "augmentation")})
    resolve_device(device)
    parse_tier_weights(tier_weights)


def _train_maskrcnn(
    dataset: str,
    config: dict,
    instances: tuple[str, ...],
    name: str | None,
    device: str,
    as_json: bool,
) -> None:
    from tomoloop.flows.instances import train_maskrcnn

    with _database_errors():
        found = _dataset(_open_registry(), dataset)
        result = train_maskrcnn(found.id, name, config, instances, device)
    if as_json:
        emit_json(result)
    else:
        _summary_table(f"model version {result['model_version']}", result)


@app.command()
def evaluate(
    model: Annotated[int, typer.Option(help="Registered model version id.")],
    dataset: Annotated[str, typer.Option(help="NAME or NAME@VERSION (default latest).")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Score a model on a dataset split (mIoU, mDSC, fIU, per class); recorded as metrics."""
    from tomoloop.flows.train import evaluate_model

    if split not in ("train", "val", "test"):
        raise TomoloopError(f"--split {split!r}: use train, val or test")
    with _database_errors():
        found = _dataset(_open_registry(), dataset)
        result = evaluate_model(model, found.id, split, device)
    if as_json:
        emit_json(result)
    else:
        _summary_table(f"model {model} on {result['dataset']} {split}", result)


@app.command()
def predict(
    gray: Annotated[Path, typer.Argument(help="Grayscale stack (TIFF).")],
    model: Annotated[int, typer.Option(help="Registered model version id.")],
    out_path: Annotated[Path, typer.Option("--out", help="Label TIFF to write.")],
    uncertainty: Annotated[
        Path | None, typer.Option(help="Also write per-voxel entropy (float16 TIFF) here.")
    ] = None,
    axes: Annotated[str, typer.Option(help="z, or zyx to fuse XY, XZ and YZ slices.")] = "z",
    tile: Annotated[
        int | None,
        typer.Option(help="Tile side (multiple of 16); default the training patch."),
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Segment a whole volume with a registered model (tiled, blended, streamed to disk)."""
    from tomoloop.flows.resources import Services, load_registered_model
    from tomoloop.inference.predict import predict_volume
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.stacks.tiff import open_stack
    from tomoloop.training.trainer import resolve_device

    if not axes or set(axes) - set("zyx") or len(set(axes)) != len(axes):
        raise TomoloopError(f"--axes {axes!r}: use z or zyx")
    if tile is not None and (tile < 16 or tile % 16):
        raise TomoloopError(f"--tile {tile}: use a multiple of 16")
    outputs = [Output("--out", out_path)]
    if uncertainty is not None:
        outputs.append(Output("--uncertainty", uncertainty))
    check_outputs({"GRAY": gray}, outputs)
    open_stack(gray).close()  # an unreadable stack: one line before the model loads
    torch_device = resolve_device(device)
    with _database_errors():
        services = Services.from_settings(create=False)
    try:
        with _database_errors():
            network, spec, _ = load_registered_model(services, model, str(torch_device))
    finally:
        services.close()
    with open_stack(gray) as stack, progress_bar(disable=as_json) as bar:
        task = bar.add_task("slices", total=sum(stack.shape["zyx".index(a)] for a in axes))
        result = predict_volume(
            network,
            stack,
            out_path,
            uncertainty,
            axes=tuple(axes),
            tile=tile or spec.tile,
            overlap=spec.tile // 4,
            device=torch_device,
            on_slice=lambda _axis, _index: bar.advance(task),
        )
    document = {
        "model_version": model,
        "labels": str(result.labels),
        "uncertainty": None if result.uncertainty is None else str(result.uncertainty),
        "classes": list(spec.class_names),
        "axes": axes,
    }
    if as_json:
        emit_json(document)
    else:
        out.print(f"[green]✓[/] labels {result.labels} ({', '.join(spec.class_names)})")


MethodOpt = Annotated[str, typer.Option(help="entropy, margin, bald, tta or ensemble.")]
AggregationOpt = Annotated[str, typer.Option(help="mean, top_percentile or foreground_weighted.")]
PassesOpt = Annotated[int, typer.Option(help="MC-dropout passes for bald.")]


@app.command()
def score(
    model: Annotated[int, typer.Option(help="Registered model version id.")],
    volume: Annotated[str, typer.Option(help="Registered volume name.")],
    method: MethodOpt = "entropy",
    aggregation: AggregationOpt = "mean",
    passes: PassesOpt = 8,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Score every slice of a volume for active learning; scores go to the registry."""
    from tomoloop.active.scoring import ScoreOptions
    from tomoloop.flows.score import score_volume

    ScoreOptions(method, aggregation)  # a bad name fails before the flow starts
    with _database_errors():
        result = score_volume(model, volume, method, aggregation, passes, "z", device)
    if as_json:
        emit_json(result)
        return
    out.print(f"{result['slices']} slices of {volume} scored by {result['method']}; the top:")
    table = Table()
    table.add_column("z")
    table.add_column("score")
    for row in result["top"]:
        table.add_row(str(row["index"]), f"{row['score']:.4f}")
    out.print(table)


@app.command("predict-distributed")
def predict_distributed(
    model: Annotated[int, typer.Option(help="Registered model version id.")],
    volume: Annotated[str, typer.Option(help="Registered volume name.")],
    out_path: Annotated[Path, typer.Option("--out", help="Zarr group to write (new).")],
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://host:8786); default a local cluster."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes of the local cluster.")] = 2,
    chunk: Annotated[int, typer.Option(help="z slices per task (and per zarr chunk).")] = 8,
    method: MethodOpt = "entropy",
    aggregation: AggregationOpt = "mean",
    passes: PassesOpt = 8,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Predict and score a registered volume as Prefect tasks on a Dask cluster: labels
    and uncertainty to a zarr group, slice scores to the registry."""
    from tomoloop.active.scoring import ScoreOptions
    from tomoloop.coco.convert import check_new
    from tomoloop.flows.distributed import run_distributed
    from tomoloop.outputs import Output, check_outputs

    ScoreOptions(method, aggregation, passes)  # bad names fail before a cluster starts
    check_new(out_path)
    check_outputs({}, [Output("--out", out_path, folder=True)])
    if workers < 1 or chunk < 1:
        raise TomoloopError(f"--workers {workers} --chunk {chunk}: both must be ≥ 1")
    with _database_errors():
        result = run_distributed(
            scheduler, workers, model_id=model, volume=volume, out=str(out_path),
            method=method, aggregation=aggregation, passes=passes, chunk=chunk, device=device,
        )  # fmt: skip
    if as_json:
        emit_json(result)
        return
    out.print(
        f"{result['slices']} slices of {volume} in {result['tasks']} tasks → {result['out']} "
        f"(labels, uncertainty); scores ({result['method']}) in the registry"
    )


PortOpt = Annotated[int, typer.Option(help="Port on 127.0.0.1.")]


def _local_label_studio(port: int = 8080):
    from tomoloop.adapters.labelstudio_server import LocalLabelStudio
    from tomoloop.config import Settings

    return LocalLabelStudio(Settings().home, port=port)


def _report_server(info, as_json: bool) -> None:
    if as_json:
        emit_json(asdict(info))
    elif info.running:
        out.print(f"[green]✓[/] Label Studio at {info.url} (pid {info.pid}), data {info.data_dir}")
    else:
        out.print(f"Label Studio is not running (data {info.data_dir})")


@labelstudio_app.command("up")
def labelstudio_up(port: PortOpt = 8080, as_json: JsonFlag = False) -> None:
    """Install (first time, a few minutes) and start the local server; wait until healthy."""
    server = _local_label_studio(port)
    with err.status("starting Label Studio (the first start migrates its database)…"):
        info = server.up()
    _report_server(info, as_json)


@labelstudio_app.command("down")
def labelstudio_down(as_json: JsonFlag = False) -> None:
    """Stop the local server (its data stays)."""
    server = _local_label_studio()
    server.down()
    _report_server(server.status(), as_json)


@app.command("push")
def push_command(
    round_id: Annotated[int, typer.Option("--round", help="Active-learning round id.")],
    context: Annotated[int, typer.Option(help="Neighbour slices shown on each side.")] = 1,
    instance_model: Annotated[
        int | None,
        typer.Option(
            help="A Mask R-CNN model version: also send the slices to the dataset's instance "
            "project with its particles pre-filled, one region each."
        ),
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Send a round's slices to Label Studio with the model's prediction pre-filled."""
    from tomoloop.flows.labelstudio import push_round

    with _database_errors():
        result = push_round(round_id, context, instance_model, device)
    if as_json:
        emit_json(result)
        return
    out.print(f"[green]✓[/] {result['tasks']} tasks; annotate at {result['url']}")
    if "instances" in result:
        particles = result["instances"]
        out.print(
            f"[green]✓[/] {particles['tasks']} tasks with particles; draw at {particles['url']}"
        )


@app.command("pull")
def pull_command(
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    as_json: JsonFlag = False,
) -> None:
    """Pull new annotations of a dataset's project into the registry (tier annotator), send
    the labels due for review to its review project and pull the reviews (tier expert).
    """
    from tomoloop.flows.labelstudio import sync_annotations

    with _database_errors():
        result = sync_annotations(dataset)
    if as_json:
        emit_json(result)
    else:
        out.print(
            f"[green]✓[/] stored {result['stored']}, skipped {result['skipped']}, "
            f"rejected {result['rejected']} (already seen {result['seen']})"
        )
        if "review" in result:
            review = result["review"]
            out.print(
                f"  review: sent {review['sent']}, stored {review['stored']} (tier expert), "
                f"skipped {review['skipped']}, rejected {review['rejected']}"
            )
        if "instances" in result:
            drawn = result["instances"]
            out.print(
                f"  instances: stored {drawn['stored']}, skipped {drawn['skipped']}, "
                f"rejected {drawn['rejected']} (already seen {drawn['seen']})"
            )


@review_app.command("status")
def review_status(
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    as_json: JsonFlag = False,
) -> None:
    """Reviews of a dataset by state and reason, and inter-annotator agreement (mean Dice
    per phase: between annotators of one task, and annotator vs reviewer).
    """
    from tomoloop.active.review import AGREEMENT_KINDS
    from tomoloop.labels.phases import PhaseMap

    with _database_errors():
        registry = _open_registry()
        names = PhaseMap.parse(registry.dataset_phases(registry.dataset(dataset).id)).names
        summary = registry.review_summary(dataset)
        reviews = [review_row(r) for r in registry.reviews(dataset)]
    if as_json:
        emit_json({**summary, "reviews": reviews})
        return
    states = ", ".join(f"{n} {state}" for state, n in summary["states"].items())
    reasons = ", ".join(f"{n} {why}" for why, n in summary["reasons"].items()) or "none"
    out.print(f"[bold]{dataset}[/] reviews: {states}; reasons: {reasons}")
    table = Table("agreement (mean Dice)", *names)
    for kind, label in AGREEMENT_KINDS.items():
        row = summary["agreement"][kind]
        table.add_row(
            label,
            *(f"{row[n]['dice']:.3f} ({row[n]['pairs']})" if n in row else "–" for n in names),
        )
    out.print(table)
    print_rows("reviews", [r for r in reviews if r["state"] != "superseded"], False)


@app.command("serve-api")
def serve_api(
    port: Annotated[int, typer.Option(help="Port on --host.")] = 8700,
    host: Annotated[
        str, typer.Option(help="Interface to bind; beyond loopback needs TOMOLOOP_API_TOKEN.")
    ] = "127.0.0.1",
) -> None:
    """Serve the HTTP app: Label Studio webhooks and the read-only registry API (/docs)."""
    import uvicorn

    from tomoloop.adapters.http import check_exposure, create_app
    from tomoloop.config import Settings
    from tomoloop.flows.deployments import start_retrain

    check_exposure(host, Settings())
    uvicorn.run(create_app(on_new_labels=start_retrain), host=host, port=port, log_level="info")


StrategyOpt = Annotated[
    str,
    typer.Option(
        help="random, foreground_random, entropy, margin, bald, tta, ensemble, disagreement, "
        "coreset, hybrid."
    ),
]


@app.command("gold")
def gold(
    labels: Annotated[Path, typer.Argument(help="Gold label stack of the volume.")],
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    volume: Annotated[str, typer.Option(help="Registered volume name.")],
    splits: Annotated[str, typer.Option(help="Splits to label, comma-separated.")] = "val,test",
    as_json: JsonFlag = False,
) -> None:
    """Register gold (expert-tier) labels for the val/test slices models are judged on."""
    from tomoloop.flows.ingest import add_gold

    chosen = tuple(s.strip() for s in splits.split(",") if s.strip())
    if not chosen or not set(chosen) <= {"train", "val", "test"}:
        raise TomoloopError(f"--splits {splits!r}: a comma-separated subset of train,val,test")
    with _database_errors():
        result = add_gold(dataset, volume, str(labels), chosen)
    _print_result(f"gold labels for {dataset}", result, as_json)


@app.command("round")
def al_round_command(
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    strategy: StrategyOpt = "bald",
    budget: Annotated[int, typer.Option(help="Slices in the round.")] = 8,
    per_volume: Annotated[int | None, typer.Option(help="At most this many per volume.")] = None,
    min_gap: Annotated[int, typer.Option(help="Minimum index gap between chosen slices.")] = 3,
    model: Annotated[int | None, typer.Option(help="Scoring model (default champion).")] = None,
    cost_aware: Annotated[
        bool, typer.Option(help="Rank by score per expected second of annotation.")
    ] = True,
    push: Annotated[bool, typer.Option(help="Push the round to Label Studio.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the random strategies.")] = 0,
    instance_model: Annotated[
        int | None,
        typer.Option(
            help="Mask R-CNN version: --strategy disagreement compares with it, and the "
            "push pre-fills its particles in the dataset's instance project."
        ),
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Open an active-learning round: score, choose the slices worth labelling, push them."""
    from tomoloop.active.selection import Constraints
    from tomoloop.active.strategies import get
    from tomoloop.flows.loop import al_round

    get(strategy)
    Constraints(budget, per_volume, min_gap)
    with _database_errors():
        result = al_round(
            dataset,
            strategy,
            budget,
            per_volume,
            min_gap,
            model,
            cost_aware,
            seed,
            push=push,
            instance_model=instance_model,
            device=device,
        )
    _print_result(f"round {result['round']} of {dataset}", result, as_json)


@app.command("retrain")
def retrain_command(
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    fine_tune: Annotated[bool, typer.Option(help="Start from the champion's weights.")] = True,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Train a challenger on a new dataset version holding every slice's best label."""
    from tomoloop.flows.loop import retrain

    with _database_errors():
        result = retrain(dataset, fine_tune=fine_tune, device=device)
    _print_result(f"challenger of {dataset}", result, as_json)


MarginOpt = Annotated[float, typer.Option(help="mIoU gain the challenger must exceed.")]
ToleranceOpt = Annotated[
    float, typer.Option(help="Largest |predicted − gold| phase volume fraction (0–1).")
]


@app.command("promote")
def promote_command(
    model: Annotated[int, typer.Option(help="Challenger model version id.")],
    margin: MarginOpt = 0.0,
    fraction_tolerance: ToleranceOpt = 0.05,
    tortuosity_tolerance: Annotated[
        float,
        typer.Option(
            help="Largest relative change of the pore's in-plane tortuosity (0.2 = 20 %)."
        ),
    ] = 0.2,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Promote a challenger that beats the champion on gold test and passes the gates."""
    from tomoloop.flows.loop import promote

    with _database_errors():
        result = promote(model, "mIoU", margin, fraction_tolerance, device, tortuosity_tolerance)
    _print_result(f"model {model}", result, as_json)


@app.command("loop")
def loop_command(
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    rounds: Annotated[int, typer.Option(help="Most rounds to run.")] = 3,
    strategy: StrategyOpt = "bald",
    budget: Annotated[int, typer.Option(help="Slices per round.")] = 8,
    min_gap: Annotated[int, typer.Option(help="Minimum index gap between chosen slices.")] = 3,
    annotator: Annotated[
        str, typer.Option(help="oracle (answers from --truth) or human (stop after the push).")
    ] = "oracle",
    truth: Annotated[
        list[str] | None, typer.Option(help="VOLUME=LABELS.tif ground truth for the oracle.")
    ] = None,
    bias: Annotated[
        list[str] | None, typer.Option(help="Oracle bias PHASE=PIXELS (negative erodes).")
    ] = None,
    noise: Annotated[float, typer.Option(help="Oracle boundary noise probability.")] = 0.0,
    reviewer: Annotated[
        str | None,
        typer.Option(help="oracle: answer the review tasks from --truth too (default: people)."),
    ] = None,
    label_budget: Annotated[int | None, typer.Option(help="Stop after this many labels.")] = None,
    patience: Annotated[int, typer.Option(help="Stop after this many rounds without gain.")] = 2,
    margin: MarginOpt = 0.0,
    fraction_tolerance: ToleranceOpt = 0.05,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Run active-learning rounds: choose → label in Label Studio → retrain → promote."""
    from tomoloop.active.oracle import Behaviour
    from tomoloop.flows.loop import loop

    try:
        biases = {k: int(v) for k, v in parse_pairs(bias, "--bias", "cbd=-1").items()}
    except ValueError:
        raise TomoloopError(f"--bias {bias}: PIXELS must be an integer, e.g. cbd=-1") from None
    behaviour = {"bias": biases, "noise": noise}
    Behaviour(**behaviour)
    with _database_errors():
        result = loop(
            dataset,
            rounds,
            strategy,
            budget,
            min_gap,
            annotator,
            parse_pairs(truth, "--truth", "nmc=labels.tif"),
            behaviour,
            reviewer,
            label_budget,
            patience,
            margin=margin,
            fraction_tolerance=fraction_tolerance,
            device=device,
        )
    _print_result(f"active learning on {dataset}", result, as_json)


@app.command("serve")
def serve(
    dataset: Annotated[str, typer.Option(help="Dataset whose loop to run.")],
    round_cron: Annotated[str, typer.Option(help="Cron schedule of new rounds.")] = "0 2 * * *",
    check_minutes: Annotated[int, typer.Option(help="Minutes between new-label checks.")] = 15,
    sync_minutes: Annotated[int, typer.Option(help="Minutes between Label Studio polls.")] = 5,
    threshold: Annotated[int, typer.Option(help="New labels that start a retraining.")] = 8,
    strategy: StrategyOpt = "bald",
    budget: Annotated[int, typer.Option(help="Slices per round.")] = 8,
) -> None:
    """Run the loop's deployments (sync, retrain on new labels, scheduled rounds) until
    stopped; needs a Prefect server (PREFECT_API_URL).
    """
    from prefect import serve as prefect_serve

    from tomoloop.active.strategies import get
    from tomoloop.flows.deployments import Schedule, deployments

    get(strategy)
    when = Schedule(round_cron, check_minutes, sync_minutes, threshold, strategy, budget)
    prefect_serve(*deployments(dataset, when))


@benchmark_app.command("al")
def benchmark_al(
    gray: Annotated[Path, typer.Option(help="Grayscale stack.")],
    labels: Annotated[Path, typer.Option(help="Gold label stack (the direct oracle).")],
    phases: Annotated[str, typer.Option(help="Phase map, e.g. pore=0,nmc=1,cbd=2.")],
    strategies: Annotated[
        str, typer.Option(help="Comma-separated strategy names.")
    ] = "random,foreground_random,entropy,bald",
    seeds: Annotated[int, typer.Option(help="Repetitions with different seeds.")] = 3,
    rounds: Annotated[int, typer.Option(help="Rounds after the initial slices.")] = 4,
    budget: Annotated[int, typer.Option(help="Slices per round.")] = 4,
    initial: Annotated[int, typer.Option(help="Random slices labelled at the start.")] = 4,
    min_gap: Annotated[int, typer.Option(help="Minimum z gap between chosen slices.")] = 2,
    arch: Annotated[str, typer.Option(help="Architecture trained each round.")] = "unet",
    option: Annotated[
        list[str] | None, typer.Option(help="Network option KEY=VALUE (repeatable).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Epochs per training.")] = 6,
    patch: Annotated[int, typer.Option(help="Training patch side.")] = 64,
    patches_per_epoch: Annotated[int, typer.Option(help="Patches per epoch.")] = 128,
    plot: Annotated[Path | None, typer.Option(help="Write the curves as a PNG.")] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Label efficiency of query strategies with a direct oracle (no server): test mIoU
    against labelled slices, labels to reach 95 % of the full-data mIoU, area under curve.
    """
    from tomoloop.active.label_efficiency import EfficiencySetup, efficiency, stack_split
    from tomoloop.active.strategies import get
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.report.plots import plot_efficiency
    from tomoloop.stacks.tiff import open_stack
    from tomoloop.training.trainer import TrainConfig, resolve_device

    names = tuple(n.strip() for n in strategies.split(",") if n.strip())
    for name in names:
        get(name)
    phase_map = PhaseMap.parse(phases)
    if plot is not None:
        check_outputs({"--gray": gray, "--labels": labels}, [Output("--plot", plot)])
    setup = EfficiencySetup(
        names,
        seeds,
        rounds,
        budget,
        initial,
        min_gap,
        arch,
        parse_options(option),
        TrainConfig(
            epochs=epochs,
            patch=patch,
            patches_per_epoch=patches_per_epoch,
            overlap=patch // 4,
            patience=0,
        ),
        str(resolve_device(device)),
    )
    with open_stack(gray) as g, open_stack(labels) as lab:
        split = stack_split(g, lab, phase_map)
    document = efficiency(
        split,
        setup,
        on_curve=lambda name, seed, curve: err.print(
            f"[cyan]•[/] {name} seed {seed}: " + ", ".join(f"{n}→{m:.3f}" for n, m in curve)
        ),
    )
    if plot is not None:
        document["plot"] = str(plot_efficiency(document, plot))
    if as_json:
        emit_json(document)
        return
    table = Table(title=f"label efficiency (full data mIoU {document['full_data_miou']:.4f})")
    for column in ("strategy", "labels to 95 %", "AUC", "curve"):
        table.add_column(column)
    for name, result in document["strategies"].items():
        table.add_row(
            name,
            str(result["labels_to_95"]),
            f"{result['auc']:.4f}",
            " ".join(f"{n}:{m:.3f}" for n, m in result["curve"]),
        )
    out.print(table)


@app.command("microstructure")
def microstructure_command(
    labels: Annotated[Path, typer.Argument(help="Label stack (TIFF).")],
    phases: Annotated[
        str | None, typer.Option(help="Phase map, e.g. pore=0,nmc=1,cbd=2 (default: values).")
    ] = None,
    axes: Annotated[
        str,
        typer.Option(help="Tortuosity directions, a subset of zyx (default: the gate's x)."),
    ] = "x",
    tortuosity_phases: Annotated[
        str | None,
        typer.Option(
            help="Phases whose tortuosity to solve, e.g. pore,cbd, or all "
            "(default: the first phase, the pore the promotion gate checks)."
        ),
    ] = None,
    voxel_size: VoxelOpt = None,
    particles: Annotated[
        list[str] | None,
        typer.Option(help="Phase whose particle-size distribution to add (watershed)."),
    ] = None,
    bin_um: Annotated[float, typer.Option(help="Size-distribution bin, µm.")] = 0.5,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Phase volume fractions, specific surface areas, tortuosity factors (TauFactor) and,
    for --particles phases, particle-size distributions.
    """
    from tomoloop.coco.convert import class_index_lut
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.metrics.structure import microstructure
    from tomoloop.particles.reassembly import phase_size_distribution
    from tomoloop.stacks.tiff import check_declared, open_stack, scan_label_values
    from tomoloop.training.trainer import resolve_device

    if not axes or set(axes) - set("zyx"):
        raise TomoloopError(f"--axes {axes!r}: a subset of zyx, e.g. --axes zx")
    with open_stack(labels, parse_voxel_size(voxel_size)) as stack:
        phase_map = (
            PhaseMap.parse(phases) if phases else PhaseMap.from_values(scan_label_values(stack))
        )
        volume = stack.read()
        size = stack.voxel_size
    check_declared(volume, phase_map, labels.name)
    if size is None:
        err.print("no voxel size in the file or --voxel-size: lengths and areas are in voxels")
    unknown = [p for p in particles or () if p not in phase_map.names]
    if unknown:
        raise TomoloopError(f"--particles {unknown[0]}: name one of {', '.join(phase_map.names)}")
    classes = class_index_lut(phase_map)[volume]
    transport = (
        phase_map.names
        if tortuosity_phases == "all"
        else (tortuosity_phases or phase_map.names[0]).split(",")
    )
    result = microstructure(classes, phase_map.names, size, axes, resolve_device(device), transport)
    for name in particles or ():
        mask = classes == phase_map.names.index(name)
        result["phases"][name]["particle_size_distribution"] = phase_size_distribution(
            mask, size or (1.0, 1.0, 1.0), bin_um
        )
    if as_json:
        emit_json(result)
        return
    unit = result["length_unit"]
    table = Table(title=f"{labels.name}, voxel {result['voxel_size_um'] or 'size unknown'} {unit}")
    for column in ("phase", "volume fraction", f"surface area {unit}⁻¹", *(f"τ {a}" for a in axes)):
        table.add_column(column)
    for name, values in result["phases"].items():
        taus = values["tortuosity"]  # "—": does not connect the faces; blank: not solved
        table.add_row(
            name,
            f"{values['volume_fraction']:.4f}",
            f"{values['specific_surface_area']:.4f}",
            *("" if a not in taus else "—" if taus[a] is None else f"{taus[a]:.3f}" for a in axes),
        )
    out.print(table)


@app.command("particles")
def particles_command(
    gray: Annotated[Path, typer.Argument(help="Grayscale stack (TIFF).")],
    model: Annotated[int, typer.Option(help="Registered Mask R-CNN model version id.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (must be new).")],
    flaw_model: Annotated[
        int | None, typer.Option(help="Registered flaw classifier id: classify particles.")
    ] = None,
    axes: Annotated[str, typer.Option(help="Slicing directions to predict and fuse.")] = "zyx",
    voxel_size: VoxelOpt = None,
    option: Annotated[
        list[str] | None,
        typer.Option(help="Reassembly option KEY=VALUE, e.g. erosion=0, watershed=false."),
    ] = None,
    bin_um: Annotated[float, typer.Option(help="Size-distribution bin, µm.")] = 0.5,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    phase: Annotated[
        str | None, typer.Option(help="The model's particle category, if it finds several.")
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Find, measure and (optionally) classify the 3D particles of a volume: labels.tif,
    particles.csv, psd.png, summary.json and flaws.tif (with --flaw-model) in --out.
    """
    from tomoloop.flows.instances import particles
    from tomoloop.outputs import Output, check_outputs

    if not axes or set(axes) - set("zyx") or len(set(axes)) != len(axes):
        raise TomoloopError(f"--axes {axes!r}: a subset of zyx, e.g. --axes zyx")
    check_outputs({"GRAY": gray}, [Output("--out", out_dir, folder=True, replaces=overwrite)])
    with _database_errors():
        result = particles(
            str(gray),
            model,
            str(out_dir),
            axes,
            parse_voxel_size(voxel_size),
            flaw_model,
            parse_options(option),
            bin_um,
            overwrite,
            device,
            phase,
        )
    _print_result(f"particles of {gray.name}", result, as_json)


@flaws_app.command("train")
def flaws_train(
    slices: Annotated[
        Path, typer.Option(help="Folder with flawed/ and unflawed/ PNG particle slices.")
    ],
    name: Annotated[str, typer.Option(help="Model name in the registry.")] = "flaws",
    epochs: Annotated[int, typer.Option(help="Most epochs.")] = 60,
    patience: Annotated[
        int, typer.Option(help="Epochs without a gain (Daemi et al. 2022: 15).")
    ] = 15,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Train the flaw classifier and register it; use its id with particles --flaw-model."""
    from tomoloop.flows.instances import train_flaw_classifier
    from tomoloop.names import check_name

    check_name(name, "--name")
    with _database_errors():
        result = train_flaw_classifier(
            str(slices), name, {"epochs": epochs, "patience": patience}, device=device
        )
    _print_result(f"flaw classifier {result['model_version']}", result, as_json)


@labelstudio_app.command("status")
def labelstudio_status(as_json: JsonFlag = False) -> None:
    """Whether the local server runs, where, and where its data and log are."""
    _report_server(_local_label_studio().status(), as_json)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where results go.")] = Path("demo-out"),
    gray: Annotated[Path | None, typer.Option(help="Your grayscale stack (with --labels).")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Your rough label stack (with --gray).")
    ] = None,
    gold: Annotated[
        Path | None, typer.Option(help="Exact labels the oracle answers from (default --labels).")
    ] = None,
    phases: Annotated[
        str | None, typer.Option(help="Phase map of your stacks, e.g. 'pore=0,nmc=1,cbd=2'.")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Active-learning rounds.")] = 3,
    budget: Annotated[int, typer.Option(help="Slices per round.")] = 4,
    strategy: StrategyOpt = "bald",
    port: PortOpt = 8080,
    annotator: Annotated[
        str, typer.Option(help="oracle (answers through Label Studio) or human (you label).")
    ] = "oracle",
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """The main job end to end: Label Studio up, ingest, train, active-learning rounds
    answered by the oracle through Label Studio, retrain, promote, report.
    """
    from tomoloop.active.strategies import get
    from tomoloop.flows.demo import demo as demo_flow
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.stacks.tiff import open_stack

    if (gray is None) != (labels is None):
        raise TomoloopError("give both --gray and --labels, or neither to use the generated sample")
    if annotator not in ("oracle", "human"):
        raise TomoloopError(f"--annotator {annotator!r}: use oracle or human")
    if gray is not None and phases is None:
        raise TomoloopError("--phases is needed with your own stacks, e.g. pore=0,nmc=1,cbd=2")
    if phases is not None:
        PhaseMap.parse(phases)
    get(strategy)
    for path in (p for p in (gray, labels, gold) if p is not None):
        open_stack(path).close()
    inputs = {"--gray": gray, "--labels": labels, "--gold": gold}
    check_outputs(inputs, [Output("--out", out_dir, folder=True)])
    with _database_errors():
        result = demo_flow(
            str(out_dir),
            None if gray is None else str(gray),
            None if labels is None else str(labels),
            None if gold is None else str(gold),
            phases,
            rounds=rounds,
            budget=budget,
            strategy=strategy,
            port=port,
            annotator=annotator,
            device=device,
        )
    if as_json:
        emit_json(result)
        return
    if "waiting_for" in result:
        out.print(
            f"round {result['waiting_for']} is waiting for you: annotate at "
            f"{result['annotate_at']} (admin@tomoloop.local; the password is in "
            f"{result['home']}/labelstudio/server.json). Then, with "
            f"TOMOLOOP_HOME={result['home']}: tomoloop pull --dataset "
            f"{result['dataset']} && tomoloop retrain --dataset {result['dataset']}"
        )
        return
    print_rows("models", result["models"], False)
    print_rows("rounds", result["rounds"], False)
    out.print(f"stopped: {result['loop']['stopped']}; champion: model {result['loop']['champion']}")
    out.print(f"[green]✓[/] report: {result['report']}")
    out.print(
        f"Label Studio stays up at {result['label_studio']} (`tomoloop labelstudio down` stops "
        f"it); query the registry with TOMOLOOP_HOME={result['home']} tomoloop registry models"
    )


def report_error(message: str, kind: str, as_json: bool) -> None:
    """One unwrapped line ``error: <message>`` on stderr (bold red only on a terminal);
    with ``--json`` also ``{"error": <message>, "kind": <kind>}`` on stdout.
    """
    message = " ".join(message.splitlines())
    if as_json:
        emit_json({"error": message, "kind": kind})
    if err.is_terminal:
        err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    else:
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()


def usage_message(exc: UsageError) -> str:
    """A usage error (unknown option, missing argument, bad value) as one sentence that
    names the command's help, e.g. ``No such option: --x; see 'tomoloop predict --help'``.
    """
    command = exc.ctx.command_path if exc.ctx is not None else "tomoloop"
    return f"{exc.format_message().rstrip('.')}; see '{command} --help'"


def main() -> None:
    """Console entry point: run the app, print TomoloopErrors and usage errors as one line
    without a traceback (also errors raised inside Prefect flows, whose console logging is
    quieted by :mod:`tomoloop.terminal`); exit 2 for both.
    """
    os.environ.setdefault(
        "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS", "tomoloop.terminal.TerminalHandler"
    )
    lifeline.start()  # children (Prefect's temporary server) end with this process
    _Request.json = False
    try:
        code = app(standalone_mode=False)
    except TomoloopError as exc:
        report_error(str(exc), type(exc).__name__, _Request.json)
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:
        exc.show()  # a group called bare: its help, as click does
        sys.exit(exc.exit_code)
    except UsageError as exc:  # parsed before any --json callback ran: read argv
        report_error(usage_message(exc), "UsageError", "--json" in sys.argv[1:])
        sys.exit(exc.exit_code)
    except typer.Abort:
        report_error("aborted", "Abort", _Request.json)
        sys.exit(1)
    if isinstance(code, int) and code:  # typer.Exit(code) or --help's Exit(0)
        sys.exit(code)


if __name__ == "__main__":
    main()
