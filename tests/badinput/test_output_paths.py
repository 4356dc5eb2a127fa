"""Hostile output locations: an output that is an input (directly, through a symbolic or a
hard link), two outputs at one path, a folder ``--overwrite`` would replace around an input
or the working folder, a file where a folder goes (and back), a path below a file, a
read-only place and a full disk. Each is refused with one line naming the option and what
to do, before any work; nothing is half-written and no input changes.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn
from typer.testing import CliRunner

from tomoloop.cli import app
from tomoloop.errors import OutputError, TomoloopError

PHASES = "pore=0,nmc=1,cbd=2"


@pytest.fixture
def work(tmp_path, electrode_volume, monkeypatch) -> Path:
    """A working folder holding gray.tif, labels.tif and a plain file note.txt; the cwd."""
    tifffile.imwrite(tmp_path / "labels.tif", electrode_volume)
    tifffile.imwrite(tmp_path / "gray.tif", (electrode_volume * 80 + 20).astype(np.uint8))
    (tmp_path / "note.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOMOLOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'home' / 'r.sqlite'}")
    return tmp_path


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path below ``folder`` with its bytes (None for folders)."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def _refused(args: list[str], message: str) -> str:
    """Run the CLI in-process; assert it refused with one line matching ``message``."""
    result = CliRunner().invoke(app, args)
    said = str(result.exception)
    assert isinstance(result.exception, TomoloopError), (result.exception, result.output)
    assert result.exception.exit_code == 2
    assert "\n" not in said and "Traceback" not in result.output
    assert re.search(message, said), said
    return said


def _link(kind: str) -> Callable[[Path], str]:
    def make(work: Path) -> str:
        (os.symlink if kind == "symlink" else os.link)(work / "gray.tif", work / "alias.tif")
        return "alias.tif"

    return make


def _mkdir(name: str) -> Callable[[Path], str]:
    def make(work: Path) -> str:
        (work / name).mkdir()
        return name

    return make


def _h5(work: Path) -> str:
    """scan.h5 holding gray.tif's volume at /exchange/data."""
    import h5py

    with h5py.File(work / "scan.h5", "w") as h5:
        h5.create_dataset("exchange/data", data=tifffile.imread(work / "gray.tif"))
    return "scan.h5"


def _slices(work: Path) -> str:
    """slices/: labels.tif as one TIFF per z."""
    (work / "slices").mkdir()
    for i, plane in enumerate(tifffile.imread(work / "labels.tif")):
        tifffile.imwrite(work / "slices" / f"z{i}.tif", plane)
    return "slices"


PREDICT = ["predict", "gray.tif", "--model", "1"]
COCO = ["coco", "from-stack", "--labels", "labels.tif", "--phases", PHASES]
NO_SETUP: Callable[[Path], str] = lambda work: ""  # noqa: E731

# case → (prepare the folder, arguments ({} is what prepare returned), message)
CASES: dict[str, tuple[Callable[[Path], str], list[str], str]] = {
    "predict --out is the input": (
        NO_SETUP, [*PREDICT, "--out", "gray.tif"], r"--out gray.tif is the input GRAY"
    ),
    "predict --out is the input by another spelling": (
        NO_SETUP, [*PREDICT, "--out", "./x/../gray.tif"], "is the input GRAY",
    ),
    "predict --out is a symbolic link to the input": (
        _link("symlink"), [*PREDICT, "--out", "{}"], "alias.tif is the input GRAY",
    ),
    "predict --out is a hard link to the input": (
        _link("hardlink"), [*PREDICT, "--out", "{}"], "alias.tif is the input GRAY",
    ),
    "predict --out is the HDF5 file the input dataset is in": (
        _h5, ["predict", "{}:/exchange/data", "--model", "1", "--out", "{}"],
        r"--out scan.h5 is the input GRAY",
    ),
    "predict --uncertainty is the input": (
        NO_SETUP, [*PREDICT, "--out", "p.tif", "--uncertainty", "gray.tif"],
        "--uncertainty gray.tif is the input GRAY",
    ),
    "predict --out and --uncertainty at one path": (
        NO_SETUP, [*PREDICT, "--out", "p.tif", "--uncertainty", "p.tif"],
        "--out and --uncertainty are both p.tif",
    ),
    "predict --out and --uncertainty at one path spelt twice": (
        NO_SETUP, [*PREDICT, "--out", "p.tif", "--uncertainty", "sub/../p.tif"],
        "--out and --uncertainty are both",
    ),
    "predict --out an existing folder": (
        _mkdir("results"), [*PREDICT, "--out", "{}"], "--out results is a folder: give a file",
    ),
    "predict --out below a file": (
        NO_SETUP, [*PREDICT, "--out", "note.txt/p.tif"], "note.txt is a file, not a folder",
    ),
    "coco from-stack --out is the input labels": (
        NO_SETUP, [*COCO, "--out", "labels.tif"], "--out labels.tif is the input --labels",
    ),
    "coco from-stack --out is the input gray": (
        NO_SETUP, [*COCO, "--gray", "gray.tif", "--out", "gray.tif"], "is the input --gray",
    ),
    "coco from-stack --out the input slice folder --overwrite": (
        _slices, [*COCO[:3], "{}", *COCO[4:], "--out", "{}", "--overwrite"],
        "--out slices is the input --labels",
    ),
    "coco from-stack --out an existing file": (
        NO_SETUP, [*COCO, "--out", "note.txt"], "--out note.txt is a file: give a new folder",
    ),
    "coco from-stack --out below a file": (
        NO_SETUP, [*COCO, "--out", "note.txt/coco"], "note.txt is a file, not a folder",
    ),
    "coco from-stack --out . --overwrite": (
        NO_SETUP, [*COCO, "--out", ".", "--overwrite"],
        "--out . --overwrite would replace the folder that holds the input --labels",
    ),
    "coco from-stack --out the inputs' folder --overwrite": (
        NO_SETUP, [*COCO, "--out", "{work}", "--overwrite"],
        "would replace the folder that holds the input --labels",
    ),
    "coco from-stack --out .. --overwrite": (
        NO_SETUP, [*COCO, "--out", "..", "--overwrite"], "would replace the folder that holds",
    ),
    "coco export --out an existing file": (
        NO_SETUP, ["coco", "export", "--dataset", "nmc", "--out", "note.txt"],
        "--out note.txt is a file",
    ),
    "particles --out is the input": (
        NO_SETUP, ["particles", "gray.tif", "--model", "1", "--out", "gray.tif"],
        "--out gray.tif is the input GRAY",
    ),
    "particles --out an existing file": (
        NO_SETUP, ["particles", "gray.tif", "--model", "1", "--out", "note.txt"],
        "--out note.txt is a file",
    ),
    "particles --out . --overwrite": (
        NO_SETUP, ["particles", "gray.tif", "--model", "1", "--out", ".", "--overwrite"],
        "would replace the folder that holds the input GRAY",
    ),
    "predict-distributed --out below a file": (
        NO_SETUP, ["predict-distributed", "--model", "1", "--volume", "v", "--out", "note.txt/z"],
        "note.txt is a file, not a folder",
    ),
    "demo --out is the input": (
        NO_SETUP,
        ["demo", "--gray", "gray.tif", "--labels", "labels.tif", "--phases", PHASES,
         "--out", "labels.tif"],
        "--out labels.tif is the input --labels",
    ),
    "benchmark al --plot is the input": (
        NO_SETUP,
        ["benchmark", "al", "--gray", "gray.tif", "--labels", "labels.tif", "--phases", PHASES,
         "--plot", "gray.tif"],
        "--plot gray.tif is the input --gray",
    ),
    "view --screenshot is the input labels": (
        NO_SETUP, ["view", "gray.tif", "--labels", "labels.tif", "--screenshot", "labels.tif"],
        "--screenshot labels.tif is the input --labels",
    ),
    "view --screenshot an existing folder": (
        _mkdir("shots"), ["view", "gray.tif", "--screenshot", "{}"],
        "--screenshot shots is a folder: give a file",
    ),
    "predict --out an existing file": (
        NO_SETUP, [*PREDICT, "--out", "note.txt"], "--out note.txt exists: choose a new file",
    ),
    "predict --uncertainty an existing file": (
        NO_SETUP, [*PREDICT, "--out", "p.tif", "--uncertainty", "note.txt"],
        "--uncertainty note.txt exists",
    ),
    "view --screenshot an existing file (another volume's stack)": (
        NO_SETUP, ["view", "gray.tif", "--screenshot", "labels.tif"],
        "--screenshot labels.tif exists",
    ),
    "benchmark --plot an existing file": (
        NO_SETUP,
        ["benchmark", "al", "--gray", "gray.tif", "--labels", "labels.tif", "--phases", PHASES,
         "--plot", "note.txt"],
        "--plot note.txt exists",
    ),
    "train with the run folder below a file": (
        lambda work: (work / "home").write_text("not a folder") and "",
        ["train", "--dataset", "nmc"],
        r"the run folder .*home is a file, not a folder",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_outputs_are_refused_before_any_work(case, work):
    prepare, args, message = CASES[case]
    made = prepare(work)
    before = _snapshot(work)
    _refused([a.format(made, work=work) for a in args], message)
    assert _snapshot(work) == before  # no input changed, no output, no partial file


def test_a_refused_output_is_one_line_on_stderr_and_exit_2(work):
    result = subprocess.run(
        [sys.executable, "-m", "tomoloop.cli", *PREDICT, "--out", "gray.tif"],
        capture_output=True, text=True, cwd=work, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "--out gray.tif is the input GRAY" in " ".join(result.stderr.split())


# ---------------------------------------------------------------- read-only and full places


@pytest.fixture
def mount_tmpfs(tmp_path) -> Iterator[Callable[[str, str], Path]]:
    """``mount(name, options)``: a small tmpfs at ``tmp_path/name`` (root only; skipped
    where mounting is not allowed), unmounted afterwards.
    """
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def read_only(tmp_path, mount_tmpfs) -> Iterator[Path]:
    """A folder nobody may write in: chmod 0555, or (as root, who ignores modes) a
    read-only tmpfs.
    """
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        yield folder
        folder.chmod(0o755)
        return
    folder.chmod(0o755)
    yield mount_tmpfs("ro", "ro,size=64k")


@pytest.mark.parametrize(
    "args",
    [
        [*PREDICT, "--out", "{}/p.tif"],
        [*COCO, "--out", "{}/coco"],
        ["particles", "gray.tif", "--model", "1", "--out", "{}/particles"],
        ["coco", "export", "--dataset", "nmc", "--out", "{}/coco"],
    ],
    ids=["predict", "coco from-stack", "particles", "coco export"],
)
def test_an_output_in_a_read_only_place_is_refused_before_any_work(args, work, read_only):
    before = _snapshot(work)
    _refused([a.format(read_only) for a in args], r"cannot write in .* \((the file system is "
             r"read-only|permission denied)\): choose a writable place")  # fmt: skip
    assert _snapshot(work) == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux: /proc takes no folders")
def test_an_output_where_no_folder_can_be_made_is_one_line_not_a_traceback(work):
    before = _snapshot(work)
    _refused([*COCO, "--out", "/proc/tomoloop-out"], r"cannot write --out /proc/tomoloop-out: "
             r"a folder on the path cannot be made there .*choose another place")  # fmt: skip
    assert _snapshot(work) == before


def test_a_read_only_run_folder_refuses_train_before_anything_is_registered(
    work, read_only, monkeypatch
):
    monkeypatch.setenv("TOMOLOOP_HOME", str(read_only / "home"))
    _refused(["train", "--dataset", "nmc"], "the run folder .*cannot write in")


def _predict(gray: Path, out: Path, uncertainty: Path | None = None, axes=("z",)):
    from tomoloop.inference.predict import predict_volume
    from tomoloop.stacks.opener import open_stack

    torch.manual_seed(0)
    with open_stack(gray) as stack:
        return predict_volume(nn.Conv2d(1, 3, 1), stack, out, uncertainty, axes=axes, tile=32)


def test_predict_on_a_full_disk_is_one_line_and_leaves_nothing(work, mount_tmpfs):
    full = mount_tmpfs("full", "size=64k")  # labels 38 kB + entropy 77 kB do not fit
    with pytest.raises(OutputError, match=r"cannot write --out .*the disk is full"):
        _predict(work / "gray.tif", full / "p.tif", full / "u.tif")
    assert list(full.iterdir()) == []


def _disk_full_after(calls: int, real: Callable) -> Callable:
    """``real`` that raises ENOSPC from its ``calls``-th call on (a disk filling up)."""
    count = iter(range(10**9))

    def write(*args, **kwargs):
        if next(count) >= calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    return write


@pytest.mark.parametrize("axes", [("z",), ("z", "y", "x")])
def test_predict_when_the_disk_fills_mid_write_leaves_nothing(work, monkeypatch, axes):
    monkeypatch.setattr(
        tifffile.TiffWriter, "write", _disk_full_after(5, tifffile.TiffWriter.write)
    )
    with pytest.raises(OutputError, match=r"cannot write --out .*the disk is full.*nothing"):
        _predict(work / "gray.tif", work / "out" / "p.tif", work / "out" / "u.tif", axes)
    assert list((work / "out").iterdir()) == []


def test_coco_when_the_disk_fills_mid_write_leaves_nothing(work, monkeypatch):
    import tomoloop.coco.convert

    monkeypatch.setattr(
        tomoloop.coco.convert, "write_png", _disk_full_after(7, tomoloop.coco.convert.write_png)
    )
    before = _snapshot(work)
    _refused([*COCO, "--gray", "gray.tif", "--out", "coco", "--workers", "1"],
             "cannot write --out coco: the disk is full")  # fmt: skip
    assert _snapshot(work) == before


def test_particle_report_when_the_disk_fills_leaves_the_old_folder(work, monkeypatch):
    import tomoloop.particles.reassembly

    old = work / "particles"
    old.mkdir()
    (old / "summary.json").write_text("{}")
    monkeypatch.setattr(
        tomoloop.particles.reassembly,
        "plot_size_distribution",
        _disk_full_after(0, lambda *a: None),
    )
    summary = {"kept": 0, "size_distribution": {"counts": [], "edges_um": [0.0]}}
    labels = np.zeros((2, 4, 4), np.uint16)
    with pytest.raises(OutputError, match=r"cannot write --out .*particles: the disk is full"):
        tomoloop.particles.reassembly.write_particle_report(
            old, labels, (1, 1, 1), [], summary, None, True
        )
    assert _snapshot(work / "particles") == {"summary.json": b"{}"}
    assert sorted(p.name for p in work.iterdir()) == ["gray.tif", "labels.tif", "note.txt",
                                                      "particles"]  # fmt: skip


def test_a_checkpoint_that_does_not_fit_leaves_the_last_one(tmp_path, monkeypatch):
    from tomoloop.training.trainer import _atomic_save

    _atomic_save({"epoch": 1}, tmp_path / "last.pt")
    monkeypatch.setattr(torch, "save", _disk_full_after(0, torch.save))
    with pytest.raises(OSError, match="No space"):
        _atomic_save({"epoch": 2}, tmp_path / "last.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert torch.load(tmp_path / "last.pt")["epoch"] == 1


# ---------------------------------------------------------------- modes of what is written


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_outputs_get_the_modes_the_umask_gives(work, umask):
    _predict(work / "gray.tif", work / "p.tif", work / "u.tif")
    result = CliRunner().invoke(app, [*COCO, "--gray", "gray.tif", "--out", "coco"])
    assert result.exit_code == 0, result.output
    assert _mode(work / "p.tif") == _mode(work / "u.tif") == 0o666 & ~umask
    assert _mode(work / "coco") == 0o777 & ~umask
    assert _mode(work / "coco" / "masks") == 0o777 & ~umask
    assert _mode(work / "coco" / "annotations.json") == 0o666 & ~umask
