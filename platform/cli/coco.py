"""``tomoloop coco``: label stacks to COCO instances and semantic masks."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tomoloop.cli.lookup import find_dataset, open_registry
from tomoloop.cli.options import STACK_FORMATS, JsonFlag, VoxelOpt, parse_voxel_size, stack_files
from tomoloop.cli.output import out, progress_bar
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError

if TYPE_CHECKING:
    from tomoloop.coco.convert import CocoSummary

coco_app = typer.Typer(
    help="Convert label stacks to COCO instances and semantic masks.", no_args_is_help=True
)


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

    def work() -> dict:
        found = find_dataset(open_registry(), dataset)
        coco = found.artifacts.get("coco")
        if coco is None:
            raise TomoloopError(f"dataset {found.name}@{found.version} has no COCO export")
        data = ArtifactStore(Settings().artifact_root).get_bytes(coco["uri"], coco["sha256"])
        files = unzip_to(data, out_dir)
        return {
            "dataset": found.name,
            "version": found.version,
            "out_dir": str(out_dir),
            "files": files,
        }

    run(work, as_json, _show_export)


def _show_export(result: dict) -> None:
    out.print(
        f"[green]✓[/] {result['dataset']}@{result['version']}: {result['files']} files in "
        f"{result['out_dir']}"
    )


@coco_app.command("from-stack")
def coco_from_stack(
    labels: Annotated[
        str,
        typer.Option("--labels", help=f"Label stack (binarized or multiphase): {STACK_FORMATS}."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (must be new or empty).")],
    gray: Annotated[
        str | None, typer.Option("--gray", help="Grayscale stack: exported as 8-bit PNG images.")
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
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the split's block shuffle. Default: the first (0, 1, …) that leaves "
            "no split short of a phase, as `tomoloop ingest` does.",
        ),
    ] = None,
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
    from tomoloop.stacks.checks import scan_label_values
    from tomoloop.stacks.opener import open_stack, source_name
    from tomoloop.stacks.stack import AXES

    if connectivity not in (4, 8):
        raise TomoloopError(f"--connectivity {connectivity}: use 4 or 8")
    if axis not in AXES:
        raise TomoloopError(f"--axis {axis!r}: use z, y or x")
    for flag, value, least in (
        ("--min-area", min_area, 0),
        ("--gap", gap, 0),
        ("--workers", workers, 1),
        ("--seed", seed, 0),
    ):
        if value is not None and value < least:
            raise TomoloopError(f"{flag} {value}: must be ≥ {least}")
    fractions = parse_fractions(split) if split else None
    size = parse_voxel_size(voxel_size)
    phase_map = PhaseMap.parse(phases) if phases else None
    check_outputs(
        stack_files({"--labels": labels, "--gray": gray}),
        [Output("--out", out_dir, folder=True, replaces=overwrite)],
    )

    def work() -> "CocoSummary":
        with open_stack(labels, size) as label_stack:
            gray_stack = open_stack(gray, size) if gray is not None else None
            try:
                found = (
                    phase_map
                    if phase_map is not None
                    else PhaseMap.from_values(scan_label_values(label_stack))
                )
                options = CocoOptions(
                    instance_phases=tuple(found.value(p) for p in phase or ()),
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
                    task = bar.add_task(f"{source_name(labels)} → COCO", total=n)
                    return convert_stack(
                        label_stack,
                        out_dir,
                        found,
                        options,
                        gray=gray_stack,
                        overwrite=overwrite,
                        on_slice=lambda _: bar.advance(task),
                    )
            finally:
                if gray_stack is not None:
                    gray_stack.close()

    run(work, as_json, _show_summary, document=lambda summary: summary.to_dict())


def _show_summary(summary: "CocoSummary") -> None:
    counts = ", ".join(f"{k} {v}" for k, v in summary.instances.items())
    shuffle = "" if summary.split_seed is None else f", split shuffle {summary.split_seed}"
    out.print(
        f"[green]✓[/] {summary.slices} slices → {sum(summary.instances.values())} instances "
        f"({counts}) of {', '.join(summary.categories)} in {summary.out_dir} "
        f"[dim]({summary.to_dict()['slices_per_s']:.0f} slices/s, "
        f"{summary.removed_by_min_area} removed by --min-area{shuffle})[/]"
    )
