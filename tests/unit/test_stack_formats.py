"""Every input format behind the one lazy Stack: HDF5/NeXus, Zarr v3 and OME-Zarr, folders of
TIFF/PNG slices, raw binary. Each reads back exactly what the test wrote (values along
every axis, shape, dtype, voxel size), reopens from its registry source, and refuses bad
input with one StackReadError line.
"""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tomoloop.errors import StackReadError
from tomoloop.stacks.folder import natural_key
from tomoloop.stacks.opener import (
    RawLayout,
    StackSource,
    open_stack,
    parse_source,
    source_name,
)
from tomoloop.stacks.stack import file_sha256

VOL = np.random.default_rng(3).integers(0, 4000, (6, 9, 11), dtype=np.uint16)


def _assert_reads(stack, volume):
    assert stack.shape == volume.shape and stack.dtype == volume.dtype
    for i in (0, volume.shape[0] - 1):
        np.testing.assert_array_equal(stack.slice("z", i), volume[i])
    y = volume.shape[1] // 2
    np.testing.assert_array_equal(stack.slice("y", y), volume[:, y])
    np.testing.assert_array_equal(stack.slice("x", volume.shape[2] - 1), volume[:, :, -1])
    np.testing.assert_array_equal(dict(stack.iter_slices("y", band_bytes=1))[y], volume[:, y])
    np.testing.assert_array_equal(stack.read(), volume)


def _refused(source, *parts):
    with pytest.raises(StackReadError) as info:
        open_stack(source)
    said = str(info.value)
    assert "\n" not in said
    for part in parts:
        assert part in said, said


# ---------------------------------------------------------------- HDF5 / NeXus


def _data_exchange(path, volume, resolution=None, units="um"):
    with h5py.File(path, "w") as h5:
        h5.create_dataset("exchange/data", data=volume, chunks=(1, *volume.shape[1:]))
        h5.create_dataset("exchange/data_white", data=volume[0])
        if resolution is not None:
            res = h5.create_dataset(
                "measurement/instrument/detection_system/objective/resolution", data=resolution
            )
            res.attrs["units"] = units


def test_data_exchange_volume_is_read_lazily_with_its_resolution(tmp_path):
    path = tmp_path / "scan.h5"
    _data_exchange(path, VOL, resolution=650.0, units="nm")
    with open_stack(path) as stack:
        _assert_reads(stack, VOL)
        assert stack.voxel_size == pytest.approx((0.65, 0.65, 0.65))
        assert stack.source == f"{path}:/exchange/data"
    with open_stack(path, voxel_size=(1.0, 2.0, 3.0)) as stack:
        assert stack.voxel_size == (1.0, 2.0, 3.0)


def test_named_nexus_dataset_gets_voxel_size_from_its_axes(tmp_path):
    path = tmp_path / "scan.nxs"
    with h5py.File(path, "w") as h5:
        entry = h5.create_group("entry")
        h5.attrs["default"] = "entry"
        data = entry.create_group("data")
        entry.attrs["default"] = "data"
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "data"
        data.attrs["axes"] = ["z", "y", "x"]
        data.create_dataset("data", data=VOL.astype(">u2"), compression="gzip")
        for name, n, step in (("z", 6, 2.0), ("y", 9, 0.5), ("x", 11, 0.25)):
            axis = data.create_dataset(name, data=np.arange(n) * step + 10)
            axis.attrs["units"] = "micrometer"
    for source in (f"{path}:/entry/data/data", path):  # named, and the NeXus default
        with open_stack(source) as stack:
            _assert_reads(stack, VOL)
            assert stack.dtype.isnative
            assert stack.voxel_size == pytest.approx((2.0, 0.5, 0.25))
            assert stack.source == f"{path}:/entry/data/data"


def test_element_size_um_and_two_volumes_in_one_file(tmp_path):
    path = tmp_path / "pair.h5"
    with h5py.File(path, "w") as h5:
        gray = h5.create_dataset("gray", data=VOL)
        gray.attrs["element_size_um"] = [1.0, 0.5, 0.5]
        h5.create_dataset("labels", data=(VOL % 3).astype(np.uint8)[None])  # (1, z, y, x)
    with open_stack(f"{path}:/gray") as gray, open_stack(f"{path}:/labels") as labels:
        assert gray.voxel_size == (1.0, 0.5, 0.5) and labels.voxel_size is None
        _assert_reads(labels, (VOL % 3).astype(np.uint8))
        assert gray.content_sha256() != labels.content_sha256()
        assert gray.content_sha256() != file_sha256(path)


def test_an_open_stack_reads_its_files_for_the_digest_once(tmp_path, monkeypatch):
    import tomoloop.stacks.stack as stack_module

    tifffile.imwrite(tmp_path / "v.tif", VOL)
    reads = []
    real = stack_module.file_sha256
    monkeypatch.setattr(stack_module, "file_sha256", lambda p: reads.append(p) or real(p))
    with open_stack(tmp_path / "v.tif") as stack:
        assert stack.content_sha256() == stack.content_sha256() == real(tmp_path / "v.tif")
    assert reads == [tmp_path / "v.tif"]  # ingest asks for it more than once


@pytest.mark.parametrize("fmt", ["tiff", "hdf5"])
def test_a_bool_mask_reads_as_0_1_uint8_and_converts_to_coco(tmp_path, fmt):
    import json

    from pycocotools import mask as coco_mask

    from tomoloop.coco.convert import convert_stack
    from tomoloop.labels.phases import PhaseMap

    mask = np.zeros((3, 16, 20), bool)
    mask[:, 2:9, 3:12] = True  # what `tifffile.imwrite(f, seg > t)` saves
    if fmt == "tiff":
        tifffile.imwrite(tmp_path / "m.tif", mask)
        source = tmp_path / "m.tif"
    else:
        with h5py.File(tmp_path / "m.h5", "w") as f:
            f["seg"] = mask
        source = f"{tmp_path / 'm.h5'}:/seg"
    with open_stack(source) as stack:
        assert stack.dtype == np.uint8 and stack.slice("z", 1).dtype == np.uint8
        assert (stack.read() == mask).all() and (stack.slice("x", 5) == mask[:, :, 5]).all()
        convert_stack(stack, tmp_path / "coco", PhaseMap.parse("pore=0,solid=1"))
    document = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    found = [coco_mask.decode(a["segmentation"]) for a in document["annotations"]]
    assert len(found) == 3 and all((m == mask[0]).all() for m in found)


def test_hdf5_faults_are_one_line(tmp_path):
    path = tmp_path / "scan.h5"
    _data_exchange(path, VOL)
    _refused(f"{path}:/entry/nothing", "has no dataset /entry/nothing", "/exchange/data")
    _refused(f"{path}:/exchange", "not a numeric dataset")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.create_dataset("recon/volume", data=VOL)
    _refused(tmp_path / "other.h5", "no /exchange/data", "/recon/volume", "other.h5:/")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    _refused(tmp_path / "junk.h5", "is not a readable HDF5 file")
    _refused(tmp_path / "gone.h5:/exchange/data", "stack", "gone.h5 does not exist")
    with h5py.File(tmp_path / "multi.h5", "w") as h5:
        h5.create_dataset("exchange/data", data=np.zeros((2, 3, 4, 5), np.uint8))
    _refused(tmp_path / "multi.h5", "one channel and one time point")


# ---------------------------------------------------------------- Zarr and OME-Zarr


def test_zarr_v3_array_and_array_in_a_group(tmp_path):
    array = zarr.create_array(
        tmp_path / "v.zarr", shape=VOL.shape, dtype=VOL.dtype, chunks=(2, 4, 4)
    )
    array[:] = VOL
    with open_stack(tmp_path / "v.zarr") as stack:
        _assert_reads(stack, VOL)
        assert stack.voxel_size is None
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("scans/a", shape=VOL.shape, dtype=VOL.dtype)[:] = VOL
    with open_stack(f"{tmp_path / 'g.zarr'}:/scans/a") as stack:
        _assert_reads(stack, VOL)
        assert stack.source == f"{tmp_path / 'g.zarr'}:/scans/a"
    _refused(tmp_path / "g.zarr", "no OME-Zarr multiscales", "/scans/a")
    _refused(f"{tmp_path / 'g.zarr'}:/scans/b", "has no array /scans/b", "/scans/a")


def _ome_zarr(path, volume, version, axes="zyx", scale=(2.0, 0.5, 0.5), unit="micrometer"):
    """An OME-Zarr image with two levels (the second halves y and x)."""
    fmt = 3 if version == "0.5" else 2
    group = zarr.open_group(path, mode="w", zarr_format=fmt)
    data = volume.reshape((1,) * (len(axes) - 3) + volume.shape)
    levels = [data, data[..., ::2, ::2]]
    datasets = []
    for k, level in enumerate(levels):
        group.create_array(str(k), shape=level.shape, dtype=level.dtype)[:] = level
        factor = [1.0] * (len(axes) - 3) + [scale[0], scale[1] * 2**k, scale[2] * 2**k]
        transforms = [{"type": "scale", "scale": factor}]
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    named = [
        {"name": a, "type": "space", "unit": unit} if a in "zyx" else {"name": a, "type": "channel"}
        for a in axes
    ]
    multiscale = {"version": version, "axes": named, "datasets": datasets}
    if version == "0.5":
        group.attrs["ome"] = {"version": version, "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [multiscale]


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_ome_zarr_level_0_by_default_and_any_level_by_name(tmp_path, version):
    path = tmp_path / "img.ome.zarr"
    _ome_zarr(path, VOL, version, axes="czyx")
    with open_stack(path) as stack:
        _assert_reads(stack, VOL)
        assert stack.voxel_size == (2.0, 0.5, 0.5)
        assert stack.source == f"{path}:/0"
    with open_stack(f"{path}:/1") as level1:
        _assert_reads(level1, VOL[:, ::2, ::2])
        assert level1.voxel_size == (2.0, 1.0, 1.0)


def test_ome_zarr_units_and_refusals(tmp_path):
    _ome_zarr(tmp_path / "nm.zarr", VOL, "0.5", scale=(50.0, 20.0, 20.0), unit="nanometer")
    with open_stack(tmp_path / "nm.zarr") as stack:
        assert stack.voxel_size == pytest.approx((0.05, 0.02, 0.02))
    _ome_zarr(tmp_path / "nounit.zarr", VOL, "0.5", unit=None)
    with open_stack(tmp_path / "nounit.zarr") as stack:
        assert stack.voxel_size is None  # unknown, never a guess
    two = np.stack([VOL, VOL])  # c=2
    group = zarr.open_group(tmp_path / "c2.zarr", mode="w")
    group.create_array("0", shape=two.shape, dtype=two.dtype)[:] = two
    axes = [{"name": "c", "type": "channel"}] + [{"name": a, "type": "space"} for a in "zyx"]
    scale = [{"type": "scale", "scale": [1, 1, 1, 1]}]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
        ],
    }
    _refused(tmp_path / "c2.zarr", "c=2", "one channel")


# ---------------------------------------------------------------- folders of slices


def test_natural_order():
    names = ["s10.tif", "s2.tif", "S1.tif", "s1b.tif", "s0010.tif"]
    assert sorted(names, key=natural_key) == ["S1.tif", "s1b.tif", "s2.tif", "s10.tif", "s0010.tif"]


def test_tiff_slice_folder_in_natural_order_with_imagej_voxel_size(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in reversed(range(VOL.shape[0])):  # slice_2 must come before slice_10
        tifffile.imwrite(
            folder / f"slice_{i * 4}.tif",
            VOL[i],
            imagej=True,
            resolution=(2.0, 2.0),
            metadata={"spacing": 0.5, "unit": "um"},
        )
    (folder / ".slice_0.tif").write_bytes(b"AppleDouble junk")
    (folder / "notes.txt").write_text("not a slice")
    with open_stack(folder) as stack:
        _assert_reads(stack, VOL)
        assert stack.voxel_size == (0.5, 0.5, 0.5)
        assert stack.source == str(folder)
        assert len({stack.content_sha256(), file_sha256(folder / "slice_0.tif")}) == 2


def test_png_slice_folder_with_phys_voxel_size(tmp_path):
    folder = tmp_path / "png"
    folder.mkdir()
    for i, plane in enumerate(VOL):  # 2 000 000 px/m = 0.5 µm
        Image.fromarray(plane).save(folder / f"{i}.png", dpi=(50800, 50800))
    with open_stack(folder) as stack:
        _assert_reads(stack, VOL)
        assert stack.voxel_size == pytest.approx((0.5, 0.5, 0.5))


def test_slice_folder_faults_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(empty, "holds no .tif/.tiff/.png slices")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "a1.tif", VOL[0])
    tifffile.imwrite(mixed / "a2.tif", VOL[1, :5])
    _refused(mixed, "slice a2.tif is (5, 11)", "a1.tif is (9, 11)", "one shape and dtype")
    tifffile.imwrite(mixed / "a2.tif", VOL[1].astype(np.float32))
    _refused(mixed, "float32", "one shape and dtype")
    Image.fromarray(VOL[0].astype(np.uint8)).save(mixed / "a3.png")
    _refused(mixed, "both TIFF and PNG")
    colour = tmp_path / "colour"
    colour.mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(colour / "0.png")
    _refused(colour, "colour PNG")
    _refused(f"{colour}:/0", "a folder of slices", "give the path alone")


# ---------------------------------------------------------------- raw binary


def test_raw_with_offset_and_big_endian(tmp_path):
    path = tmp_path / "scan.vol"
    path.write_bytes(b"H" * 16 + VOL.astype(">u2").tobytes())
    source = f"{path}:6x9x11:>u2:16"
    with open_stack(source) as stack:
        _assert_reads(stack, VOL)
        assert stack.dtype == np.dtype("uint16") and stack.voxel_size is None
        assert stack.source == source
    with open_stack(source, voxel_size=(1.0, 1.0, 1.0)) as stack:
        assert stack.voxel_size == (1.0, 1.0, 1.0)


def test_raw_faults_are_one_line(tmp_path):
    path = tmp_path / "scan.raw"
    path.write_bytes(VOL.tobytes())
    _refused(f"{path}:6x9x10:uint16", "holds 1188 bytes", "needs 1080", ":ZxYxX:DTYPE")
    _refused(f"{path}:6x9x11:uint32", "needs 2376")
    _refused(f"{path}:6x9x11:nonsense", "not a NumPy dtype")
    _refused(f"{path}:0x9x11:uint16", "is empty")
    _refused(f"{tmp_path / 'nope.raw'}:6x9x11:uint16", "nope.raw does not exist")


# ---------------------------------------------------------------- sources


def test_parse_source(tmp_path):
    h5 = tmp_path / "a.h5"
    h5.touch()
    assert parse_source(f"{h5}:/x/y") == StackSource(h5, inner="/x/y")
    assert parse_source(h5) == StackSource(h5)
    assert parse_source("b.raw:1x2x3:<f4:8") == StackSource(
        parse_source("b.raw").path, raw=RawLayout((1, 2, 3), "<f4", 8)
    )
    assert parse_source("missing.zarr:/0") == StackSource(parse_source("missing.zarr").path, "/0")
    assert parse_source("plain.tif").inner is None


def test_source_name_is_the_file_a_source_reads(tmp_path):
    h5 = tmp_path / "scan.h5"
    h5.touch()
    assert source_name(f"{h5}:/exchange/data") == "scan.h5"
    assert source_name("v.raw:8x64x64:uint16") == "v.raw"
    assert source_name("s3://bucket/run 7/scan.tif") == "scan.tif"


def test_a_url_is_no_local_input_for_the_output_check(tmp_path):
    from tomoloop.cli.options import stack_files

    local = tmp_path / "a.h5"
    local.touch()
    assert stack_files({"GRAY": "s3://b/scan.tif", "LABELS": f"{local}:/l", "X": None}) == {
        "GRAY": None,
        "LABELS": local,
        "X": None,
    }


def test_a_url_to_a_format_other_than_tiff_is_refused_before_any_request():
    with pytest.raises(StackReadError, match=r"only TIFF stacks \(\.tif, \.tiff, \.btf\) are read"):
        open_stack("s3://bucket/scan.zarr")


def _write(kind, path, volume):
    """Write ``volume`` in format ``kind``; the source that reads it back."""
    if kind == "hdf5":
        with h5py.File(path, "w") as h5:
            h5.create_dataset("exchange/data", data=volume, chunks=True)
        return path
    if kind == "zarr":
        chunks = (1, -(-volume.shape[1] // 2), -(-volume.shape[2] // 2))  # 4 per slice
        zarr.create_array(path, shape=volume.shape, dtype=volume.dtype, chunks=chunks)[:] = volume
        return path
    if kind == "raw":
        path.write_bytes(volume.tobytes())
        return f"{path}:{'x'.join(map(str, volume.shape))}:{volume.dtype.str}"
    path.mkdir()
    for i, plane in enumerate(volume):
        tifffile.imwrite(path / f"z{i}.tif", plane)
    return path


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["hdf5", "zarr", "raw", "folder"]),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 7), st.integers(1, 7)),
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32]),
    seed=st.integers(0, 2**16),
)
def test_every_format_round_trips_exactly_and_reopens_from_its_source(
    tmp_path_factory, kind, shape, dtype, seed
):
    volume = (np.random.default_rng(seed).random(shape) * 200).astype(dtype)
    source = _write(kind, tmp_path_factory.mktemp(kind) / f"v.{kind}", volume)
    with open_stack(source) as stack:
        _assert_reads(stack, volume)
        again = stack.source
    with open_stack(again) as reopened:  # what the registry keeps
        np.testing.assert_array_equal(reopened.read(), volume)


@pytest.mark.parametrize("kind", ["hdf5", "zarr", "raw", "folder"])
def test_reading_one_slice_does_not_load_the_volume(tmp_path, kind):
    volume = np.random.default_rng(5).integers(0, 60000, (32, 128, 128), dtype=np.uint16)
    source = _write(kind, tmp_path / f"v.{kind}", volume)  # 1 MiB; a slice is 32 KiB
    with open_stack(source) as stack:
        stack.slice("z", 0)  # first reads open caches (HDF5 chunk cache, zarr codecs)
        tracemalloc.start()
        image = stack.slice("z", 20)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    np.testing.assert_array_equal(image, volume[20])
    assert peak < 8 * image.nbytes, peak
