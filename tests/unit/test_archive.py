"""Zip archives of COCO folders: exact round trips, the same bytes for the same folder,
never unpacked over an existing folder."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tomoloop.errors import OutputError
from tomoloop.stacks.archive import unzip_to, zip_folder

NAMES = st.sampled_from(["train.json", "images/0001.png", "masks/a.png", "README", "x/y/z.txt"])


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(NAMES, st.binary(max_size=2048), min_size=1))
def test_a_folder_round_trips_exactly_and_zips_to_the_same_bytes(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("coco")
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    first = zip_folder(folder, folder.parent / f"{folder.name}-1.zip").read_bytes()
    for path in folder.rglob("*"):
        os.utime(path, (1e9, 1e9))  # other times, same contents
    assert zip_folder(folder, folder.parent / f"{folder.name}-2.zip").read_bytes() == first
    out = folder.parent / f"{folder.name}-out"
    assert unzip_to(first, out) == len(files)
    assert {
        p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
    } == files


def test_unzipping_never_writes_over_an_existing_folder(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "train.json").write_text("{}")
    archive = zip_folder(tmp_path / "coco", tmp_path / "coco.zip")
    with pytest.raises(OutputError, match="exists"):
        unzip_to(archive.read_bytes(), tmp_path / "coco")
    assert [p.name for p in (tmp_path / "coco").iterdir()] == ["train.json"]


def test_pngs_are_stored_as_they_are_and_the_rest_deflated(tmp_path):
    import zipfile

    (tmp_path / "coco" / "images").mkdir(parents=True)
    (tmp_path / "coco" / "images" / "z00000.PNG").write_bytes(b"\x89PNG" + bytes(4000))
    (tmp_path / "coco" / "train.json").write_text('{"images": []}' * 300)
    with zipfile.ZipFile(zip_folder(tmp_path / "coco", tmp_path / "coco.zip")) as archive:
        kinds = {i.filename: i.compress_type for i in archive.infolist()}
        assert archive.read("images/z00000.PNG") == b"\x89PNG" + bytes(4000)
    assert kinds == {"images/z00000.PNG": zipfile.ZIP_STORED, "train.json": zipfile.ZIP_DEFLATED}
