"""``tomoloop view``: a volume with its labels, prediction and uncertainty in napari."""

from pathlib import Path
from typing import Annotated

import typer

from tomoloop.cli.options import STACK_FORMATS, JsonFlag, VoxelOpt, parse_voxel_size, stack_files
from tomoloop.cli.output import out
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError

SAME_SHAPE = "same shape as the grey stack"


def view(
    gray: Annotated[str, typer.Argument(help=f"Grayscale stack: {STACK_FORMATS}.")],
    labels: Annotated[
        str | None, typer.Option(help=f"Label stack (phase values), {SAME_SHAPE}.")
    ] = None,
    prediction: Annotated[
        str | None,
        typer.Option(help=f"Predicted classes (tomoloop predict --out), {SAME_SHAPE}."),
    ] = None,
    uncertainty: Annotated[
        str | None,
        typer.Option(help=f"Per-voxel uncertainty (tomoloop predict --uncertainty), {SAME_SHAPE}."),
    ] = None,
    phases: Annotated[
        str | None,
        typer.Option(
            help="Phase map that names and colours the labels, e.g. pore=0,nmc=1,cbd=2 "
            "(prediction class k is its k-th phase)."
        ),
    ] = None,
    index: Annotated[
        int | None, typer.Option("--slice", help="z slice shown first (default the middle).")
    ] = None,
    grid: Annotated[
        bool,
        typer.Option(
            help="Labels, prediction and uncertainty side by side, each over the grey image."
        ),
    ] = False,
    screenshot: Annotated[
        Path | None,
        typer.Option(
            help="Draw the view into this PNG and exit (a display is needed all the same: "
            "xvfb-run -a tomoloop view …)."
        ),
    ] = None,
    voxel_size: VoxelOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Look at a volume without Label Studio: the grey image, its labels, a prediction and
    its uncertainty as napari layers, read a slice at a time (napari is the optional extra
    view: pip install 'tomoloop\\[view]'). --json lists the layers as napari holds them."""
    from contextlib import ExitStack

    from tomoloop.adapters.viewer import napari_ready, show
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.report.layers import volume_layers
    from tomoloop.stacks.checks import check_label_dtype, check_same_shape
    from tomoloop.stacks.opener import open_stack

    phase_map = PhaseMap.parse(phases) if phases is not None else None
    size = parse_voxel_size(voxel_size)
    sources = {"--labels": labels, "--prediction": prediction, "--uncertainty": uncertainty}
    if screenshot is not None:
        inputs = stack_files({"GRAY": gray, **sources})
        check_outputs(inputs, [Output("--screenshot", screenshot)])

    def work() -> dict:
        with ExitStack() as opened:
            base = opened.enter_context(open_stack(gray, size))
            stacks = {
                flag: None if source is None else opened.enter_context(open_stack(source, size))
                for flag, source in sources.items()
            }
            for flag, stack in stacks.items():
                if stack is not None:
                    check_same_shape(base, stack, flag.removeprefix("--"))
                    if flag != "--uncertainty":
                        check_label_dtype(stack)
            z = base.shape[0] // 2 if index is None else index
            if not 0 <= z < base.shape[0]:
                raise TomoloopError(f"--slice {z}: {gray} has z slices 0–{base.shape[0] - 1}")
            napari_ready()  # not installed, or no display: one line once the inputs are good
            layers = volume_layers(
                base, stacks["--labels"], stacks["--prediction"], stacks["--uncertainty"], phase_map
            )
            listing = show(layers, z, grid=grid, screenshot=screenshot, title=f"tomoloop · {gray}")
        return {
            "slice": z,
            "grid": grid,
            "screenshot": None if screenshot is None else str(screenshot),
            "layers": listing,
        }

    run(work, as_json, _show_view)


def _show_view(result: dict) -> None:
    if result["screenshot"] is not None:
        names = ", ".join(layer["name"] for layer in result["layers"])
        out.print(f"[green]✓[/] z = {result['slice']} ({names}) → {result['screenshot']}")
