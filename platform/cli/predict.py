"""``tomoloop predict``, ``tomoloop score`` and ``tomoloop predict-distributed``: a
registered model over a whole volume (labels, uncertainty, slice scores)."""

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from tomoloop.cli.options import (
    STACK_FORMATS,
    AggregationOpt,
    DeviceOpt,
    JsonFlag,
    MethodOpt,
    PassesOpt,
    stack_files,
)
from tomoloop.cli.output import out, progress_bar
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError


def predict(
    gray: Annotated[str, typer.Argument(help=f"Grayscale stack: {STACK_FORMATS}.")],
    model: Annotated[int, typer.Option(help="Registered model version id.")],
    out_path: Annotated[Path, typer.Option("--out", help="Labels to write (TIFF or OME-Zarr).")],
    uncertainty: Annotated[
        Path | None,
        typer.Option(help="Also write per-voxel entropy here (float16 TIFF, float32 OME-Zarr)."),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="tiff, or ome-zarr (a multiscale pyramid; labels named by class)."
        ),
    ] = "tiff",
    axes: Annotated[str, typer.Option(help="z, or zyx to fuse XY, XZ and YZ slices.")] = "z",
    tile: Annotated[
        int | None,
        typer.Option(help="Tile side (multiple of 16); default the training patch."),
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Segment a whole volume with a registered model (tiled, blended, streamed to disk)."""
    from tomoloop.cli.export import check_volume_format
    from tomoloop.inference.predict import default_overlap, predict_volume
    from tomoloop.inference.pyramids import predict_to_ome_zarr
    from tomoloop.outputs import Output, check_new, check_outputs
    from tomoloop.services import Services, load_registered_model
    from tomoloop.stacks.opener import open_stack
    from tomoloop.training.trainer import resolve_device

    if not axes or set(axes) - set("zyx") or len(set(axes)) != len(axes):
        raise TomoloopError(f"--axes {axes!r}: use z or zyx")
    if tile is not None and (tile < 16 or tile % 16):
        raise TomoloopError(f"--tile {tile}: use a multiple of 16")
    check_volume_format(fmt)
    zarr = fmt == "ome-zarr"
    outputs = [Output("--out", out_path, folder=zarr)]
    if uncertainty is not None:
        outputs.append(Output("--uncertainty", uncertainty, folder=zarr))
    if zarr:
        for output in outputs:
            check_new(output.path)
    check_outputs(stack_files({"GRAY": gray}), outputs)
    open_stack(gray).close()  # an unreadable stack: one line before the model loads
    torch_device = resolve_device(device)

    def work() -> dict:
        services = Services.from_settings(create=False)
        try:
            network, spec, _ = load_registered_model(services, model, str(torch_device))
        finally:
            services.close()
        with open_stack(gray) as stack, progress_bar(disable=as_json) as bar:
            task = bar.add_task("slices", total=sum(stack.shape["zyx".index(a)] for a in axes))
            predict = partial(
                predict_volume,
                network,
                stack,
                axes=tuple(axes),
                tile=tile or spec.tile,
                overlap=default_overlap(spec.tile),
                device=torch_device,
                on_slice=lambda _axis, _index: bar.advance(task),
            )
            if zarr:
                classes = dict(enumerate(spec.class_names))
                predict_to_ome_zarr(predict, stack, classes, out_path, uncertainty)
            else:
                predict(out_path, uncertainty)
        return {
            "model_version": model,
            "format": fmt,
            "labels": str(out_path),
            "uncertainty": None if uncertainty is None else str(uncertainty),
            "classes": list(spec.class_names),
            "axes": axes,
        }

    run(work, as_json, _show_labels)


def _show_labels(document: dict) -> None:
    out.print(f"[green]✓[/] labels {document['labels']} ({', '.join(document['classes'])})")


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
    run(
        lambda: score_volume(model, volume, method, aggregation, passes, "z", device),
        as_json,
        partial(_show_scores, volume),
        children=True,
    )


def _show_scores(volume: str, result: dict) -> None:
    from rich.table import Table

    out.print(f"{result['slices']} slices of {volume} scored by {result['method']}; the top:")
    table = Table()
    table.add_column("z")
    table.add_column("score")
    for row in result["top"]:
        table.add_row(str(row["index"]), f"{row['score']:.4f}")
    out.print(table)


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
    from tomoloop.flows.distributed import run_distributed
    from tomoloop.outputs import Output, check_new, check_outputs

    ScoreOptions(method, aggregation, passes)  # bad names fail before a cluster starts
    check_new(out_path)
    check_outputs({}, [Output("--out", out_path, folder=True)])
    if workers < 1 or chunk < 1:
        raise TomoloopError(f"--workers {workers} --chunk {chunk}: both must be ≥ 1")
    run(
        lambda: run_distributed(
            scheduler,
            workers,
            model_id=model,
            volume=volume,
            out=str(out_path),
            method=method,
            aggregation=aggregation,
            passes=passes,
            chunk=chunk,
            device=device,
        ),
        as_json,
        lambda result: out.print(
            f"{result['slices']} slices of {volume} in {result['tasks']} tasks → "
            f"{result['out']} (labels, uncertainty); scores ({result['method']}) in the registry"
        ),
        children=True,
    )
