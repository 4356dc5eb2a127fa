"""Files in and out: lazy TIFF stacks (z, y, x), PNG slices, deterministic zip archives."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.stacks.archive import unzip_to, zip_folder
    from tomoloop.stacks.png import write_png
    from tomoloop.stacks.tiff import (
        AXES,
        MAX_VOXEL_UM,
        UM_PER_UNIT,
        Axis,
        Stack,
        VoxelSize,
        Window,
        axis_named,
        check_label_dtype,
        check_same_shape,
        file_sha256,
        open_stack,
        percentile_window,
        present_values,
        scan_label_values,
        to_uint8,
        voxel_length_ok,
        voxel_size_from_metadata,
        write_stack,
    )

__all__ = [
    "AXES",
    "MAX_VOXEL_UM",
    "UM_PER_UNIT",
    "Axis",
    "Stack",
    "VoxelSize",
    "Window",
    "axis_named",
    "check_label_dtype",
    "check_same_shape",
    "file_sha256",
    "open_stack",
    "percentile_window",
    "present_values",
    "scan_label_values",
    "to_uint8",
    "unzip_to",
    "voxel_length_ok",
    "voxel_size_from_metadata",
    "write_png",
    "write_stack",
    "zip_folder",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AXES": "tomoloop.stacks.tiff",
        "Axis": "tomoloop.stacks.tiff",
        "MAX_VOXEL_UM": "tomoloop.stacks.tiff",
        "Stack": "tomoloop.stacks.tiff",
        "UM_PER_UNIT": "tomoloop.stacks.tiff",
        "VoxelSize": "tomoloop.stacks.tiff",
        "Window": "tomoloop.stacks.tiff",
        "axis_named": "tomoloop.stacks.tiff",
        "check_label_dtype": "tomoloop.stacks.tiff",
        "check_same_shape": "tomoloop.stacks.tiff",
        "file_sha256": "tomoloop.stacks.tiff",
        "open_stack": "tomoloop.stacks.tiff",
        "percentile_window": "tomoloop.stacks.tiff",
        "present_values": "tomoloop.stacks.tiff",
        "scan_label_values": "tomoloop.stacks.tiff",
        "to_uint8": "tomoloop.stacks.tiff",
        "unzip_to": "tomoloop.stacks.archive",
        "voxel_length_ok": "tomoloop.stacks.tiff",
        "voxel_size_from_metadata": "tomoloop.stacks.tiff",
        "write_png": "tomoloop.stacks.png",
        "write_stack": "tomoloop.stacks.tiff",
        "zip_folder": "tomoloop.stacks.archive",
    },
)
