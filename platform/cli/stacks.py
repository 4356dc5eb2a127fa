"""``tomoloop stack``: inspect grayscale and label stacks."""

from typing import Annotated

import typer

from tomoloop.cli.options import STACK_FORMATS, JsonFlag, VoxelOpt, parse_voxel_size
from tomoloop.cli.output import out
from tomoloop.cli.runner import run

stack_app = typer.Typer(help="Inspect grayscale and label stacks.", no_args_is_help=True)


@stack_app.command("info")
def stack_info(
    path: Annotated[str, typer.Argument(help=f"Stack: {STACK_FORMATS}.")],
    voxel_size: VoxelOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Shape, dtype and voxel size of a stack, read from its header only."""
    from tomoloop.stacks.opener import open_stack

    def work() -> dict:
        with open_stack(path, parse_voxel_size(voxel_size)) as stack:
            return {
                "path": str(stack.path),
                "source": stack.source,
                "shape_zyx": list(stack.shape),
                "dtype": str(stack.dtype),
                "voxel_size_um": stack.voxel_size,
            }

    run(work, as_json, _show_info)


def _show_info(info: dict) -> None:
    from rich.table import Table

    table = Table(show_header=False)
    for key, value in info.items():
        table.add_row(key, str(value))
    out.print(table)
