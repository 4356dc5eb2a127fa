"""``tomoloop particles`` (3D particles of a volume: find, measure, classify) and
``tomoloop flaws`` (the flawed-particle classifier, Daemi et al. 2022, §4)."""

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from tomoloop.cli.options import (
    STACK_FORMATS,
    BinOpt,
    DeviceOpt,
    JsonFlag,
    VoxelOpt,
    parse_options,
    parse_voxel_size,
    stack_files,
)
from tomoloop.cli.output import print_result
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError

flaws_app = typer.Typer(
    help="The flawed-particle classifier (Daemi et al. 2022, §4).", no_args_is_help=True
)


def particles_command(
    gray: Annotated[str, typer.Argument(help=f"Grayscale stack: {STACK_FORMATS}.")],
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
    bin_um: BinOpt = 0.5,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    phase: Annotated[
        str | None, typer.Option(help="The model's particle category, if it finds several.")
    ] = None,
    partial_rule: Annotated[
        str,
        typer.Option(
            help="Partial particles: slice (Daemi et al. 2022: over 20 % of a slice of the "
            "particle's box on the volume's edge covered) or surface (over 20 % of its "
            "surface on the edge)."
        ),
    ] = "slice",
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Find, measure and (optionally) classify the 3D particles of a volume: labels.tif,
    particles.csv, psd.png, summary.json and flaws.tif (with --flaw-model) in --out.
    """
    from tomoloop.flows.instances import particles
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.particles.reassembly import PARTIAL_RULES
    from tomoloop.stacks.opener import source_name

    if not axes or set(axes) - set("zyx") or len(set(axes)) != len(axes):
        raise TomoloopError(f"--axes {axes!r}: a subset of zyx, e.g. --axes zyx")
    if partial_rule not in PARTIAL_RULES:
        raise TomoloopError(f"--partial-rule {partial_rule!r}: one of {', '.join(PARTIAL_RULES)}")
    check_outputs(
        stack_files({"GRAY": gray}), [Output("--out", out_dir, folder=True, replaces=overwrite)]
    )
    run(
        lambda: particles(
            gray,
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
            partial_rule,
        ),
        as_json,
        partial(print_result, f"particles of {source_name(gray)}"),
        children=True,
    )


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
    recipe: Annotated[
        str,
        typer.Option(
            help="default (narrow, batch-normalised, global max pooling) or seed (Daemi et "
            "al. 2022: VGG16 widths 64-512, a dense layer of 256, no batch norm)."
        ),
    ] = "default",
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Train the flaw classifier and register it; use its id with particles --flaw-model."""
    from tomoloop.flows.instances import train_flaw_classifier
    from tomoloop.names import check_name
    from tomoloop.particles.flaws import SEED_FLAWS

    check_name(name, "--name")
    if recipe not in ("default", "seed"):
        raise TomoloopError(f"--recipe {recipe!r}: default or seed")
    config = {"epochs": epochs, "patience": patience, **(SEED_FLAWS if recipe == "seed" else {})}
    run(
        lambda: train_flaw_classifier(str(slices), name, config, device=device),
        as_json,
        lambda result: print_result(f"flaw classifier {result['model_version']}", result),
        children=True,
    )
