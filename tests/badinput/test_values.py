"""Hostile values: phase values no label stack can hold, voxel sizes that are not lengths,
stacks too short for their split, a stack without a voxel size, an ImageJ z-stack saved
without axes. Each is refused with one line naming the value and what is allowed (or, for
the last two, read as what it is and said so).
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from tomoloop.cli import app
from tomoloop.errors import StackReadError, TomoloopError
from tomoloop.labels.splits import split_slices
from tomoloop.stacks.opener import open_stack


@pytest.fixture
def work(tmp_path, electrode_volume, monkeypatch):
    tifffile.imwrite(tmp_path / "labels.tif", electrode_volume)
    tifffile.imwrite(tmp_path / "gray.tif", (electrode_volume * 80 + 20).astype(np.uint8))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'home' / 'r.sqlite'}")
    return tmp_path


def _refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    said = str(result.exception)
    assert isinstance(result.exception, TomoloopError), (result.exception, result.output)
    assert result.exception.exit_code == 2 and "\n" not in said
    assert re.search(message, said), said


COCO = ["coco", "from-stack", "--labels", "labels.tif", "--out", "coco", "--phases"]


@pytest.mark.parametrize(
    "phases, message",
    [
        ("pore=0,nmc=1,cbd=99999999999", r"cbd=99999999999 is out of range: label values are "
                                         r"0–65535"),
        ("pore=0,nmc=1,cbd=65536", "cbd=65536 is out of range"),
        ("pore=0,nmc=1,cbd=300", r"labels.tif z=0 stores uint8 \(values up to 255\): phase "
                                 r"cbd=300 can never occur in it"),
    ],
)  # fmt: skip
def test_phase_values_beyond_the_label_type_are_refused(work, phases, message):
    _refused([*COCO, phases], message)
    assert sorted(p.name for p in work.iterdir()) == ["gray.tif", "labels.tif"]


@pytest.mark.parametrize("size", ["1e309", "inf", "-inf", "nan", "2e6", "1,1,inf", "1,nan,1",
                                  "1.5m", "0", "-0.5"])  # fmt: skip
def test_voxel_sizes_that_are_not_lengths_are_refused(work, size):
    _refused(
        ["stack", "info", "labels.tif", "--voxel-size", size],
        rf"--voxel-size '{re.escape(size)}': give one finite length > 0 and ≤ 1e\+06 µm",
    )


def test_the_largest_voxel_size_is_accepted(work):
    args = ["stack", "info", "labels.tif", "--voxel-size", "1m", "--json"]
    result = CliRunner().invoke(app, args)
    assert json.loads(result.stdout)["voxel_size_um"] == [1e6, 1e6, 1e6]


def test_an_8_slice_stack_is_refused_at_ingest_naming_the_smallest_that_works(work):
    for name in ("gray.tif", "labels.tif"):
        tifffile.imwrite(work / name, tifffile.imread(work / name)[:8])
    _refused(
        ["ingest", "gray.tif", "--labels", "labels.tif", "--name", "tiny",
         "--phases", "pore=0,nmc=1,cbd=2"],
        r"an? 8-slice stack leaves the val and test split empty \(split 0.8,0.1,0.1, 2-slice "
        r"gaps between splits\): use a stack of at least 15 slices",
    )  # fmt: skip
    assert not (work / "home").exists()


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.98, 0.01, 0.01)])
def test_the_smallest_stack_named_fills_every_split_and_one_less_does_not(fractions):
    from tomoloop.labels.splits import check_split_fills

    with pytest.raises(TomoloopError, match="at least") as refused:
        check_split_fills(3, fractions)
    smallest = int(re.search(r"at least (\d+) slices", str(refused.value)).group(1))
    assert all(split_slices(smallest, fractions).values())
    assert not all(split_slices(smallest - 1, fractions).values())
    check_split_fills(smallest, fractions)
    check_split_fills(8, (1.0, 0.0, 0.0))  # what the user asked for: train only


def test_microstructure_without_a_voxel_size_reports_lengths_in_voxels(work):
    args = ["microstructure", "labels.tif", "--phases", "pore=0,nmc=1,cbd=2", "--axes", "z",
            "--device", "cpu", "--json"]  # fmt: skip
    unknown = json.loads(CliRunner().invoke(app, args).stdout)
    assert unknown["voxel_size_um"] is None and unknown["length_unit"] == "voxel"
    one = json.loads(CliRunner().invoke(app, [*args, "--voxel-size", "1"]).stdout)
    assert one["voxel_size_um"] == [1.0, 1.0, 1.0] and one["length_unit"] == "µm"
    assert unknown["phases"] == one["phases"]


@pytest.mark.parametrize("depth, warns", [(8, False), (3, True)])
def test_an_imagej_stack_without_axes_is_read_as_z(tmp_path, electrode_volume, caplog,
                                                    depth, warns):  # fmt: skip
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, electrode_volume[:depth], imagej=True)  # ImageJ calls it C=depth
    with caplog.at_level(logging.WARNING), open_stack(path) as stack:
        assert stack.shape == (depth, 40, 48)
        assert np.array_equal(stack.read(), electrode_volume[:depth])
    assert ("ImageJ channels as z slices" in caplog.text) == warns


def test_a_coloured_imagej_multichannel_image_is_still_refused(tmp_path, electrode_volume):
    path = tmp_path / "c3.tif"
    tifffile.imwrite(path, electrode_volume[:3], imagej=True,
                     metadata={"axes": "CYX", "mode": "composite"})  # fmt: skip
    with pytest.raises(StackReadError, match=r"C=3.*one channel"):
        open_stack(path)


def test_an_unknown_partial_particle_rule_is_refused_before_any_work(work):
    _refused(
        ["particles", "gray.tif", "--model", "1", "--out", "found", "--partial-rule", "volume"],
        r"--partial-rule 'volume': one of slice, surface",
    )
    assert not (work / "found").exists() and not (work / "home").exists()
