import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import tifffile

from tomoloop.errors import StackReadError, StackValidationError
from tomoloop.labels.phases import PhaseMap, check_declared
from tomoloop.stacks.checks import check_label_dtype, check_same_shape, scan_label_values
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.stack import axis_named
from tomoloop.stacks.tiff import write_stack
from tomoloop.stacks.window import Window, percentile_window, to_uint8

VOL = (np.random.default_rng(0).random((10, 32, 40)) * 255).astype(np.uint8)


def _write_pages(path, volume):
    with tifffile.TiffWriter(path) as writer:
        for plane in volume:
            writer.write(plane, metadata=None, contiguous=False)


WRITERS = {
    "tifffile-shaped": lambda p, v: tifffile.imwrite(p, v),
    "plain-pages": _write_pages,
    "zlib-tiled": lambda p, v: tifffile.imwrite(p, v, compression="zlib", tile=(16, 16)),
    "imagej": lambda p, v: tifffile.imwrite(p, v, imagej=True, metadata={"axes": "ZYX"}),
    "imagej-hyperstack-c1": lambda p, v: tifffile.imwrite(
        p, v[:, None], imagej=True, metadata={"axes": "ZCYX"}
    ),
    "ome": lambda p, v: tifffile.imwrite(p, v, ome=True, metadata={"axes": "ZYX"}),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_every_layout_reads_back_exactly_along_every_axis(tmp_path, kind):
    path = tmp_path / f"{kind}.tif"
    WRITERS[kind](path, VOL)
    with open_stack(path) as stack:
        assert stack.shape == VOL.shape
        assert stack.dtype == np.uint8
        for i in (0, 4, 9):
            np.testing.assert_array_equal(stack.slice("z", i), VOL[i])
        np.testing.assert_array_equal(stack.slice("y", 31), VOL[:, 31])
        np.testing.assert_array_equal(stack.slice("x", 0), VOL[:, :, 0])
        np.testing.assert_array_equal(stack.read(), VOL)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_general_zarr_reader_agrees_with_the_page_reader(tmp_path, kind):
    path = tmp_path / f"{kind}.tif"
    WRITERS[kind](path, VOL)
    with open_stack(path) as fast, open_stack(path) as general:
        assert fast._reader.pages is not None  # these layouts are one page per slice
        general._reader.pages = None  # what a >4 GB single-IFD ImageJ file is read with
        for axis, i in (("z", 3), ("y", 7), ("x", 11)):
            np.testing.assert_array_equal(general.slice(axis, i), fast.slice(axis, i))
        np.testing.assert_array_equal(general.read(), VOL)


@pytest.mark.parametrize("axis, order", [("y", 1), ("x", 2)])
def test_iter_slices_in_small_bands_matches_numpy(tmp_path, axis, order):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, VOL)
    with open_stack(path) as stack:
        got = dict(stack.iter_slices(axis, [3, 1, 7, 8], band_bytes=2 * 10 * 40))
    assert list(got) == [3, 1, 7, 8]
    for i, image in got.items():
        np.testing.assert_array_equal(image, np.take(VOL, i, axis=order))


def test_an_axis_from_a_registry_column_reads_that_axis_and_a_wrong_one_is_named(tmp_path):
    path = tmp_path / "v.tif"
    write_stack(path, VOL)
    with open_stack(path) as stack:
        np.testing.assert_array_equal(stack.slice(axis_named("y"), 3), VOL[:, 3])
    with pytest.raises(ValueError, match="axis 'Z' is not one of z, y, x"):
        axis_named("Z")


def test_a_single_2d_image_is_a_one_slice_stack(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, VOL[0])
    with open_stack(path) as stack:
        assert stack.shape == (1, 32, 40)
        np.testing.assert_array_equal(stack.slice("z", 0), VOL[0])
        np.testing.assert_array_equal(stack.slice("y", 2), VOL[:1, 2])


def test_reading_one_slice_does_not_load_the_volume(tmp_path):
    volume = np.random.default_rng(1).integers(0, 60000, (64, 256, 256), dtype=np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, volume, compression="zlib")  # 8 MiB of data
    with open_stack(path) as stack:
        tracemalloc.start()
        image = stack.slice("z", 40)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    np.testing.assert_array_equal(image, volume[40])
    assert peak < 4 * image.nbytes  # one 128 KiB slice, not the 8 MiB volume


def test_voxel_size_from_imagej_metadata(tmp_path):
    path = write_stack(tmp_path / "ij.tif", VOL, voxel_size=(2.0, 0.5, 0.25))
    with open_stack(path) as stack:
        assert stack.voxel_size == pytest.approx((2.0, 0.5, 0.25))


def test_voxel_size_from_imagej_in_nanometres(tmp_path):
    path = tmp_path / "nm.tif"
    tifffile.imwrite(
        path,
        VOL,
        imagej=True,
        resolution=(1 / 50.0, 1 / 50.0),
        metadata={"axes": "ZYX", "spacing": 100.0, "unit": "nm"},
    )
    with open_stack(path) as stack:
        assert stack.voxel_size == pytest.approx((0.1, 0.05, 0.05))


def test_voxel_size_from_ome_metadata_with_units(tmp_path):
    path = tmp_path / "v.ome.tif"
    tifffile.imwrite(
        path,
        VOL,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 120,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 0.12,
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": 0.3,
        },
    )
    with open_stack(path) as stack:
        assert stack.voxel_size == pytest.approx((0.3, 0.12, 0.12))


def test_given_voxel_size_wins_and_missing_metadata_is_none(tmp_path):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, VOL)
    with open_stack(path) as stack:
        assert stack.voxel_size is None
    with open_stack(path, voxel_size=(1.0, 1.0, 1.0)) as stack:
        assert stack.voxel_size == (1.0, 1.0, 1.0)


def test_int32_labels_round_trip_through_ome(tmp_path):
    labels = np.arange(10 * 4 * 5, dtype=np.int32).reshape(10, 4, 5) * 1000
    path = write_stack(tmp_path / "big-labels.tif", labels, voxel_size=(1.0, 0.5, 0.5))
    with open_stack(path) as stack:
        np.testing.assert_array_equal(stack.read(), labels)
        assert stack.voxel_size == pytest.approx((1.0, 0.5, 0.5))


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_percentile_window_maps_16bit_and_float_to_full_8bit_range(tmp_path, dtype):
    rng = np.random.default_rng(2)
    volume = (rng.normal(20000, 3000, (12, 30, 30))).astype(dtype)
    if dtype == np.float32:
        volume = volume / 65535.0
        volume[0, 0, 0] = np.nan
    path = tmp_path / "g.tif"
    tifffile.imwrite(path, volume)
    with open_stack(path) as stack:
        window = percentile_window(stack)
        image = to_uint8(stack.slice("z", 5), window)
    assert image.dtype == np.uint8
    assert image.min() == 0 and image.max() == 255
    assert 100 < image.mean() < 155  # the window centres the distribution


def test_uint8_passes_through_unchanged(tmp_path):
    path = tmp_path / "g.tif"
    tifffile.imwrite(path, VOL)
    with open_stack(path) as stack:
        assert percentile_window(stack) == Window(0.0, 255.0)
        image = stack.slice("z", 3)
    assert to_uint8(image, Window(0.0, 255.0)) is image


def test_missing_file(tmp_path):
    with pytest.raises(StackReadError, match="does not exist"):
        open_stack(tmp_path / "nope.tif")


def test_not_a_tiff(tmp_path):
    path = tmp_path / "junk.tif"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(StackReadError, match=r"cannot read|not a readable"):
        open_stack(path)


@pytest.mark.parametrize("kind", ["tifffile-shaped", "zlib-tiled", "plain-pages"])
def test_truncated_tiff_is_reported_not_silently_shortened(tmp_path, kind):
    path = tmp_path / "t.tif"
    WRITERS[kind](path, VOL)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StackReadError, match="corrupt or truncated"), open_stack(path) as stack:
        for _ in stack.iter_slices("z"):
            pass


def test_multichannel_hyperstack_is_refused_with_advice(tmp_path):
    path = tmp_path / "c2.tif"
    tifffile.imwrite(path, np.stack([VOL, VOL], axis=1), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(StackReadError, match=r"C=2.*one channel"):
        open_stack(path)


@pytest.mark.parametrize("depth", [3, 4])
def test_a_few_slices_saved_as_colour_planes_are_refused_with_how_to_save_them(tmp_path, depth):
    path = tmp_path / "few.tif"
    tifffile.imwrite(path, VOL[:depth])  # tifffile's default for 3 or 4 planes: RGB(A)
    with pytest.raises(StackReadError, match=rf"{depth} colour samples.*photometric='minisblack'"):
        open_stack(path)
    tifffile.imwrite(path, VOL[:depth], photometric="minisblack")  # what the message says
    with open_stack(path) as stack:
        assert stack.shape == VOL[:depth].shape


def test_shape_mismatch_float_labels_and_undeclared_values(tmp_path):
    a, b, f = tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "f.tif"
    tifffile.imwrite(a, VOL)
    tifffile.imwrite(b, VOL[:, :30])
    tifffile.imwrite(f, VOL.astype(np.float32))
    with open_stack(a) as sa, open_stack(b) as sb, open_stack(f) as sf:
        with pytest.raises(StackValidationError, match=r"\(10, 32, 40\).*\(10, 30, 40\)"):
            check_same_shape(sa, sb)
        with pytest.raises(StackValidationError, match=r"float32.*integer"):
            check_label_dtype(sf)
    labels = np.zeros((4, 4), np.uint8)
    labels[0, 0] = 7
    with pytest.raises(StackValidationError, match=r"\[7\].*pore=0,nmc=1"):
        check_declared(labels, PhaseMap.parse("pore=0,nmc=1"), "slice z=0")


def test_scan_label_values_finds_every_value(tmp_path):
    volume = np.zeros((5, 6, 6), np.uint16)
    volume[1, 2, 3], volume[4, 0, 0] = 300, 7
    path = tmp_path / "l.tif"
    tifffile.imwrite(path, volume)
    with open_stack(path) as stack:
        assert scan_label_values(stack) == [0, 7, 300]


def test_reading_a_page_per_slice_stack_does_not_import_zarr(tmp_path):
    """zarr takes longer to import than a 256³ stack takes to read: a CLI command on an
    ordinary stack must not pay for it (it is loaded for tiled / single-IFD files only)."""
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, VOL)
    code = (
        "import sys; from tomoloop.stacks.opener import open_stack\n"
        f"with open_stack({str(path)!r}) as s: s.read(); s.slice('x', 3)\n"
        "assert 'zarr' not in sys.modules, 'zarr imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
