"""``tomoloop view``: stacks as lazy array-likes, the layers of a volume, and the real
napari drawing them on a virtual screen (Xvfb, installed by scripts/ensure_display.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from tomoloop.labels.phases import PhaseMap
from tomoloop.report.layers import phase_colour, volume_layers
from tomoloop.stacks.array import StackArray
from tomoloop.stacks.opener import open_stack

INSTALL = "pip install 'tomoloop[view]'"


@pytest.fixture(params=["tiff", "raw"])
def volume_source(request, tmp_path):
    """(source, the (6, 10, 12) uint16 volume it holds): TIFF pages (read per plane) or a
    raw file (read as one memory-mapped array)."""
    volume = np.arange(6 * 10 * 12, dtype=np.uint16).reshape(6, 10, 12)
    if request.param == "tiff":
        path = tmp_path / "v.tif"
        tifffile.imwrite(path, volume)
        return str(path), volume
    path = tmp_path / "v.raw"
    volume.tofile(path)
    return f"{path}:6x10x12:uint16", volume


@pytest.mark.parametrize(
    "key",
    [
        3,
        -1,
        np.int64(4),
        (2, slice(None), 5),
        (slice(1, 6, 2),),
        (slice(None, None, -1), slice(3, 10), slice(11, 2, -3)),
        (slice(5, 5), 0),
        (slice(None), -2, slice(-4, None)),
        slice(None),
    ],
)
def test_a_stack_array_indexes_like_numpy(volume_source, key):
    source, volume = volume_source
    with open_stack(source) as stack:
        array = StackArray.of(stack)
        assert (array.shape, array.ndim, array.dtype) == (volume.shape, 3, volume.dtype)
        got = array[key]
        np.testing.assert_array_equal(got, volume[key])
        assert got.dtype == volume.dtype


@pytest.mark.parametrize(
    "key", [(0, 0, 0, 0), 6, -7, (0, 10), (slice(2, 2), 10), "z", (0, None), (True,)]
)
def test_a_stack_array_refuses_what_a_volume_has_not(volume_source, key):
    with open_stack(volume_source[0]) as stack, pytest.raises(IndexError):
        StackArray.of(stack)[key]


def test_a_stack_array_casts_to_its_dtype(tmp_path):
    tifffile.imwrite(tmp_path / "b.tif", np.eye(8, dtype=bool)[None].repeat(2, axis=0))
    with open_stack(tmp_path / "b.tif") as stack:
        got = StackArray.of(stack, np.uint8)[1]
    assert got.dtype == np.uint8 and got.sum() == 8


def write(path, volume, **kwargs):
    """``volume`` (z, y, x) as a TIFF stack at ``path``; the path."""
    tifffile.imwrite(path, volume, photometric="minisblack", **kwargs)
    return path


@pytest.fixture
def view_stacks(tmp_path, electrode_volume):
    """Paths of a (20, 40, 48) grey stack (0.5 µm voxels), its labels (pore=0, nmc=1,
    cbd=2), a prediction that misses one particle, and a float16 uncertainty high there."""
    rng = np.random.default_rng(0)
    gray = (electrode_volume * 80 + 20 + rng.normal(0, 5, electrode_volume.shape)).astype(np.uint8)
    prediction = electrode_volume.copy()
    prediction[:, :20, :24][prediction[:, :20, :24] == 1] = 0
    uncertainty = np.where(prediction != electrode_volume, 1.0, 0.05).astype(np.float16)
    return {
        "gray": write(
            tmp_path / "gray.tif",
            gray,
            imagej=True,
            resolution=(2.0, 2.0),
            metadata={"spacing": 0.5, "unit": "um"},
        ),
        "labels": write(tmp_path / "labels.tif", electrode_volume),
        "prediction": write(tmp_path / "prediction.tif", prediction),
        "uncertainty": write(tmp_path / "uncertainty.tif", uncertainty),
    }


def test_the_layers_of_a_volume_name_and_colour_phases_by_value_and_by_class(tmp_path):
    rng = np.random.default_rng(1)
    gray = write(tmp_path / "g.tif", rng.integers(0, 4096, (4, 8, 8), dtype=np.uint16))
    labels = write(tmp_path / "l.tif", np.full((4, 8, 8), 128, dtype=np.uint8))
    prediction = write(tmp_path / "p.tif", np.ones((4, 8, 8), dtype=bool))
    phases = PhaseMap.parse("pore=0,nmc=128,cbd=255")
    with open_stack(gray) as g, open_stack(labels) as lab, open_stack(prediction) as pred:
        layers = volume_layers(g, lab, pred, None, phases)
    assert [(la.name, la.kind) for la in layers] == [
        ("gray", "image"),
        ("labels", "labels"),
        ("prediction", "labels"),
    ]
    gray_layer, labels_layer, prediction_layer = layers
    assert gray_layer.scale is None  # a TIFF without a voxel size: voxels
    lo, hi = gray_layer.contrast
    assert 0 <= lo < hi <= 4095
    colours = [phase_colour(k) for k in range(3)]
    assert labels_layer.classes == dict(
        zip((0, 128, 255), zip(phases.names, colours, strict=True), strict=True)
    )
    assert prediction_layer.classes == dict(
        zip((0, 1, 2), zip(phases.names, colours, strict=True), strict=True)
    )
    assert prediction_layer.data.dtype == np.uint8  # napari labels are integers
    assert len(set(colours)) == 3


def tomoloop_view(*args, env=None, xvfb=True):
    """``tomoloop view ARGS`` as a process (under xvfb-run when ``xvfb``)."""
    command = [sys.executable, "-m", "tomoloop.cli", "view", *map(str, args)]
    if xvfb:
        if shutil.which("xvfb-run") is None:
            pytest.fail("xvfb-run is missing: bash scripts/ensure_display.sh installs it")
        command = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


def test_view_draws_grey_labels_prediction_and_uncertainty_in_napari(tmp_path, view_stacks):
    shot = tmp_path / "view.png"
    done = tomoloop_view(
        view_stacks["gray"],
        "--labels", view_stacks["labels"],
        "--prediction", view_stacks["prediction"],
        "--uncertainty", view_stacks["uncertainty"],
        "--phases", "pore=0,nmc=1,cbd=2",
        "--slice", 10,
        "--grid",
        "--screenshot", shot,
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["slice"], document["screenshot"]) == (10, str(shot))
    layers = document["layers"]
    # one panel per layer over its own copy of the grey image
    assert [(la["name"], la["kind"]) for la in layers] == [
        ("gray", "image"), ("labels", "labels"),
        ("gray [1]", "image"), ("prediction", "labels"),
        ("gray [2]", "image"), ("uncertainty", "image"),
    ]  # fmt: skip
    for layer in layers:
        assert layer["shape"] == [20, 40, 48]
        assert layer["scale"] == pytest.approx([0.5, 0.5, 0.5])
    by_name = {la["name"]: la for la in layers}
    phases = {"0": "pore", "1": "nmc", "2": "cbd"}
    assert by_name["labels"]["phases"] == by_name["prediction"]["phases"] == phases
    assert by_name["uncertainty"]["dtype"] == "float16"
    assert (by_name["uncertainty"]["colormap"], by_name["uncertainty"]["opacity"]) == (
        "inferno",
        pytest.approx(0.7),
    )
    picture = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    height, width, _ = picture.shape
    assert width == 3 * 512 and height == round(40 * 512 / 48)  # three panels, 512 px wide
    labels_panel, prediction_panel, uncertainty_panel = np.split(picture, 3, axis=1)
    for panel in (labels_panel, prediction_panel):
        assert (panel.sum(axis=2) > 30).mean() > 0.5  # the slice, not the black background
        assert len(np.unique(panel.reshape(-1, 3), axis=0)) > 20  # grey levels, tints
    assert np.abs(labels_panel - prediction_panel).sum(axis=2).astype(bool).mean() > 0.05
    bright = (uncertainty_panel.sum(axis=2) > 450).mean()  # inferno's top: the missed particle
    assert 0.03 < bright < 0.2


def test_view_without_napari_says_how_to_install_it(view_stacks):
    blocked = (
        "import sys; sys.modules['napari'] = None; "  # `import napari` then fails
        "from tomoloop.cli import main; sys.argv[0] = 'tomoloop'; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked, "view", str(view_stacks["gray"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: tomoloop view needs napari")
    assert INSTALL in done.stderr


def test_view_without_a_display_says_to_use_a_virtual_screen(view_stacks):
    screens = {"DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"}
    env = {k: v for k, v in os.environ.items() if k not in screens}
    done = tomoloop_view(view_stacks["gray"], "--json", env=env, xvfb=False)
    assert done.returncode == 2
    error = json.loads(done.stdout)
    assert error["kind"] == "ViewerUnavailable"
    assert "xvfb-run -a tomoloop view" in error["error"]
    empty = write(view_stacks["gray"].parent / "short.tif", np.zeros((3, 40, 48), np.uint8))
    bad = tomoloop_view(view_stacks["gray"], "--labels", empty, "--json", env=env, xvfb=False)
    assert "but labels short.tif are (3, 40, 48)" in json.loads(bad.stdout)["error"]  # first


def test_view_names_the_stack_whose_shape_differs(tmp_path, view_stacks):
    short = write(tmp_path / "short.tif", np.zeros((3, 40, 48), np.uint8))
    done = tomoloop_view(view_stacks["gray"], "--prediction", short, "--json")
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert "but prediction short.tif are (3, 40, 48)" in error
