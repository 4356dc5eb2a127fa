"""Formats out: OME-Zarr pyramids read back by ome-zarr-py, label volumes, nnU-Net names,
and networks exported to TorchScript and ONNX, checked by ONNX Runtime."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tomoloop.errors import OutputError, TomoloopError
from tomoloop.labels.phases import IGNORE, PhaseMap
from tomoloop.labels.volume_labels import label_dtype, paint_slice, unlabelled_value
from tomoloop.networks.export import TOLERANCE, ExportError, export_network
from tomoloop.networks.registry import MODELS, ModelSpec
from tomoloop.stacks.ngff import downsample, pyramid_shapes, write_ome_zarr
from tomoloop.training.nnunet import check_folder_name, nnunet_label, nnunet_labels


def read_ome_zarr(path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (node,) = list(Reader(parse_url(str(path)))())
    return [np.asarray(level) for level in node.data], node.metadata


def test_label_pyramid_round_trips_through_ome_zarr_reader(tmp_path):
    volume = np.random.default_rng(0).integers(0, 3, (9, 70, 33), dtype=np.uint8)
    shapes = write_ome_zarr(
        tmp_path / "l.zarr", iter(volume), volume.shape, np.uint8, (0.5, 0.25, 0.25),
        {0: "pore", 1: "nmc", 2: "cbd"}, unlabelled=255, chunk=16,
    )  # fmt: skip
    levels, meta = read_ome_zarr(tmp_path / "l.zarr")
    assert (
        [level.shape for level in levels]
        == shapes
        == [(9, 70, 33), (5, 35, 17), (3, 18, 9), (2, 9, 5)]
    )
    assert (levels[0] == volume).all()
    assert (levels[2] == volume[::4, ::4, ::4]).all()  # labels: every second voxel per level
    assert (
        meta["properties"][1] == {"name": "nmc"} and meta["properties"][255]["name"] == "unlabelled"
    )
    assert meta["color"][255] == [0, 0, 0, 0] and meta["color"][0][3] == 1.0
    scales = [t[0]["scale"] for t in meta["coordinateTransformations"]]
    assert scales == [[0.5 * 2**k, 0.25 * 2**k, 0.25 * 2**k] for k in range(4)]
    assert [a["unit"] for a in meta["axes"]] == ["micrometer"] * 3


def test_image_pyramid_averages_and_refuses_an_existing_folder(tmp_path):
    volume = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    write_ome_zarr(tmp_path / "u.zarr", iter(volume), volume.shape, np.float32, chunk=4)
    levels, meta = read_ome_zarr(tmp_path / "u.zarr")
    assert (levels[0] == volume).all() and "properties" not in meta
    assert levels[1][0, 0, 0] == volume[:2, :2, :2].mean()
    with pytest.raises(OutputError, match="exists"):
        write_ome_zarr(tmp_path / "u.zarr", iter(volume), volume.shape, np.float32)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(*[st.integers(1, 7)] * 3), elements=st.sampled_from([0, 3, 9])))
def test_downsampled_labels_hold_only_their_values_and_halve_each_side(block):
    half = downsample(block, labels=True)
    assert half.shape == tuple(-(-s // 2) for s in block.shape)
    assert set(np.unique(half)) <= set(np.unique(block))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 250), st.tuples(*[st.integers(1, 7)] * 3))
def test_mean_downsampling_keeps_a_constant(value, shape):
    block = np.full(shape, value, dtype=np.uint8)
    assert (downsample(block, labels=False) == value).all()


def test_pyramid_stops_when_a_level_fits_one_chunk():
    assert pyramid_shapes((16, 64, 96), 64) == [(16, 64, 96), (8, 32, 48)]
    assert pyramid_shapes((3, 3, 3), 64) == [(3, 3, 3)]


def test_painted_slices_keep_values_and_leave_unlabelled_voxels():
    phases = PhaseMap.parse("pore=0,nmc=5,cbd=7")
    volume = np.full((3, 4, 5), unlabelled_value(phases), label_dtype(phases))
    classes = np.array([[0, 1, 2, IGNORE, 0]] * 3, dtype=np.uint8)
    paint_slice(volume, "y", 2, classes, phases)
    assert volume[:, 2].tolist() == [[0, 5, 7, 255, 0]] * 3
    assert (volume[:, [0, 1, 3]] == 255).all()
    wide = PhaseMap.parse("a=0,b=255")
    assert unlabelled_value(wide) == 65535 and label_dtype(wide) == np.uint16
    widest = PhaseMap.parse("pore=0,solid=65535")  # a phase at uint16's top: never unlabelled
    assert unlabelled_value(widest) == 2**32 - 1 and label_dtype(widest) == np.uint32
    top = np.full((2, 3, 3), unlabelled_value(widest), label_dtype(widest))
    paint_slice(top, "z", 0, np.array([[0, 1, IGNORE]] * 3, dtype=np.uint8), widest)
    assert top[0].tolist() == [[0, 65535, 2**32 - 1]] * 3 and (top[1] == 2**32 - 1).all()
    with pytest.raises(ValueError, match="does not fit"):
        paint_slice(volume, "z", 0, classes, phases)


def test_nnunet_names_and_ignore_label():
    phases = PhaseMap.parse("pore=0,nmc=1,cbd=2")
    assert nnunet_labels(phases, sparse=True) == {"background": 0, "nmc": 1, "cbd": 2, "ignore": 3}
    mask = np.array([[0, 2, IGNORE]], dtype=np.uint8)
    assert nnunet_label(mask, 3).tolist() == [[0, 2, 3]]
    check_folder_name("Dataset501_nmc")
    with pytest.raises(TomoloopError, match="DatasetNNN_Name"):
        check_folder_name("nmc")


def tiny(arch: str) -> tuple[torch.nn.Module, ModelSpec]:
    options = {"unet": {"base": 4, "depth": 2}}.get(arch, {})
    spec = ModelSpec(arch, 1, 3, options, ("pore", "nmc", "cbd"), tile=32)
    torch.manual_seed(0)
    return spec.build().eval(), spec


def check_with_onnx_runtime(data: bytes, model: torch.nn.Module, spec: ModelSpec) -> None:
    import onnxruntime

    images = np.random.default_rng(7).random((4, 1, spec.tile, spec.tile), dtype=np.float32)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": images})
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, reference, rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.slow  # ~10 s idle; minutes on a loaded machine (the dynamo exporter)
def test_unet_exports_equal_pytorch():
    model, spec = tiny("unet")
    onnx = export_network(model, spec, "onnx")
    assert onnx.difference <= TOLERANCE
    check_with_onnx_runtime(onnx.data, model, spec)
    script = export_network(model, spec, "torchscript")
    loaded = torch.jit.load(io.BytesIO(script.data))
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_lrcsnet_is_refused_as_torchscript_with_the_reason():
    model, spec = tiny("lrcsnet")
    with pytest.raises(ExportError, match=r"max-unpooling.*export it as onnx"):
        export_network(model, spec, "torchscript")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_zero_padded_matphase_is_refused_before_a_graph_fixed_to_one_size(fmt):
    spec = ModelSpec("matphase", 1, 3, {"base": 4, "lcgar_padding": "zero"}, tile=32)
    with pytest.raises(ExportError, match="lcgar_padding=zero cannot be exported"):
        export_network(spec.build().eval(), spec, fmt)


@pytest.mark.slow  # the dynamo ONNX exporter takes 10–60 s per network here
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_architecture_exports_to_onnx_equal_to_pytorch(arch):
    model, spec = tiny(arch)
    check_with_onnx_runtime(export_network(model, spec, "onnx").data, model, spec)
    if arch != "lrcsnet":
        assert export_network(model, spec, "torchscript").difference <= TOLERANCE
