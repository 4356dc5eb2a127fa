"""Paths from documents and registry rows stay under their root."""

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomoloop.adapters.artifacts import ArtifactStore
from tomoloop.paths import PathConfinementError, artifact_key, check_artifact_key, confined


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../secret.png", "'..' component"),
        ("images/../../secret.png", "'..' component"),
        ("..\\..\\secret.png", "'..' component"),
        ("/etc/passwd", "absolute"),
        ("C:\\Windows\\win.ini", "absolute"),
        ("\\\\server\\share\\x.png", "absolute"),
        ("", "empty"),
        ("a\0.png", "NUL byte"),
    ],
)
def test_traversal_is_refused_with_the_reason(tmp_path, name, reason):
    with pytest.raises(PathConfinementError, match=reason):
        confined(tmp_path, name, "train.json image 3")


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (tmp_path / "outside.png").write_bytes(b"x")
    os.symlink(tmp_path / "outside.png", root / "link.png")
    with pytest.raises(PathConfinementError, match="symbolic link"):
        confined(root, "link.png", "train.json image 1")
    assert confined(root, "sub/z00001.png", "doc") == root / "sub" / "z00001.png"


_PIECES = st.sampled_from(["a", "b", ".", "..", "/", "\\", ":", "C", "\0"])


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_whatever_the_name_the_result_is_under_the_root_or_refused(name):
    root = Path("/srv/tomoloop/images")
    try:
        path = confined(root, name, "doc")
    except PathConfinementError:
        return
    assert Path(os.path.normpath(path)).is_relative_to(root)


def test_an_altered_artifact_key_is_refused_before_any_file_is_opened(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not an artifact")
    sha = hashlib.sha256(b"not an artifact").hexdigest()
    other = store.put_bytes(b"weights", ".pt")
    for key in ("../secret.txt", f"{sha[:2]}/../../secret.txt", other.key, f"/{sha}"):
        with pytest.raises(PathConfinementError, match="not the store location"):
            store.get_bytes(key, sha)
    assert store.get_bytes(other.key, other.sha256) == b"weights"


@pytest.mark.parametrize("suffix", ["/../x", ".png/..", ". png", ".a.b.c"])
def test_an_unsafe_suffix_is_refused(suffix):
    with pytest.raises(PathConfinementError, match="suffix"):
        artifact_key("0" * 64, suffix)


def test_keys_round_trip_through_the_check_and_belong_to_their_sha_only():
    sha, other = "ab" * 32, "cd" * 32
    for suffix in ("", ".png", ".tar.gz"):
        key = artifact_key(sha, suffix)
        assert key == f"ab/{sha}{suffix}"
        check_artifact_key(key, sha)  # its own sha: accepted
        with pytest.raises(PathConfinementError, match="not the store location"):
            check_artifact_key(key, other)
