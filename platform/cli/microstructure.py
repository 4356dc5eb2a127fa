"""``tomoloop microstructure``: phase volume fractions, specific surface areas,
tortuosity factors and particle-size distributions of a label stack."""

from typing import Annotated

import typer

from tomoloop.cli.options import (
    STACK_FORMATS,
    BinOpt,
    DeviceOpt,
    JsonFlag,
    VoxelOpt,
    parse_voxel_size,
)
from tomoloop.cli.output import err, out
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError


def microstructure_command(
    labels: Annotated[str, typer.Argument(help=f"Label stack: {STACK_FORMATS}.")],
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
    bin_um: BinOpt = 0.5,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Phase volume fractions, specific surface areas, tortuosity factors (TauFactor) and,
    for --particles phases, particle-size distributions.
    """
    from tomoloop.labels.phases import PhaseMap, check_declared, class_index_lut
    from tomoloop.metrics.structure import microstructure
    from tomoloop.particles.reassembly import phase_size_distribution
    from tomoloop.stacks.checks import scan_label_values
    from tomoloop.stacks.opener import open_stack, source_name
    from tomoloop.training.trainer import resolve_device

    if not axes or set(axes) - set("zyx"):
        raise TomoloopError(f"--axes {axes!r}: a subset of zyx, e.g. --axes zx")

    def work() -> dict:
        with open_stack(labels, parse_voxel_size(voxel_size)) as stack:
            phase_map = (
                PhaseMap.parse(phases) if phases else PhaseMap.from_values(scan_label_values(stack))
            )
            volume = stack.read()
            size = stack.voxel_size
        check_declared(volume, phase_map, source_name(labels))
        if size is None:
            err.print("no voxel size in the file or --voxel-size: lengths and areas are in voxels")
        unknown = [p for p in particles or () if p not in phase_map.names]
        if unknown:
            raise TomoloopError(
                f"--particles {unknown[0]}: name one of {', '.join(phase_map.names)}"
            )
        classes = class_index_lut(phase_map)[volume]
        transport = (
            phase_map.names
            if tortuosity_phases == "all"
            else (tortuosity_phases or phase_map.names[0]).split(",")
        )
        result = microstructure(
            classes, phase_map.names, size, axes, resolve_device(device), transport
        )
        for name in particles or ():
            mask = classes == phase_map.names.index(name)
            result["phases"][name]["particle_size_distribution"] = phase_size_distribution(
                mask, size or (1.0, 1.0, 1.0), bin_um
            )
        return result

    run(work, as_json, lambda result: _show_structure(source_name(labels), axes, result))


def _show_structure(stack_name: str, axes: str, result: dict) -> None:
    from rich.table import Table

    unit = result["length_unit"]
    table = Table(title=f"{stack_name}, voxel {result['voxel_size_um'] or 'size unknown'} {unit}")
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
