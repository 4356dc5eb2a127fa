"""Files in and out: lazy stacks (z, y, x) from TIFF, HDF5/NeXus, Zarr/OME-Zarr, slice
folders and raw binary (one opener, :func:`open_stack`), also as array-likes for viewers;
grey-value windows; checks; PNG slices; deterministic zip archives."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.stacks.archive import unzip_to, zip_folder
    from tomoloop.stacks.array import StackArray
    from tomoloop.stacks.checks import (
        check_label_dtype,
        check_same_shape,
        present_values,
        scan_label_values,
    )
    from tomoloop.stacks.opener import open_stack, parse_source, source_name, source_path
    from tomoloop.stacks.png import write_png
    from tomoloop.stacks.stack import (
        AXES,
        MAX_VOXEL_UM,
        UM_PER_UNIT,
        Axis,
        Stack,
        VoxelSize,
        axis_named,
        file_sha256,
        voxel_length_ok,
    )
    from tomoloop.stacks.tiff import voxel_size_from_metadata, write_stack
    from tomoloop.stacks.window import Window, percentile_window, to_uint8

__all__ = [
    "AXES",
    "MAX_VOXEL_UM",
    "UM_PER_UNIT",
    "Axis",
    "Stack",
    "StackArray",
    "VoxelSize",
    "Window",
    "axis_named",
    "check_label_dtype",
    "check_same_shape",
    "file_sha256",
    "open_stack",
    "parse_source",
    "percentile_window",
    "present_values",
    "scan_label_values",
    "source_name",
    "source_path",
    "to_uint8",
    "unzip_to",
    "voxel_length_ok",
    "voxel_size_from_metadata",
    "write_png",
    "write_stack",
    "zip_folder",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
