import hashlib

import fsspec
import pytest

from tomoloop.adapters.artifacts import ArtifactError, ArtifactStore


def test_put_get_round_trip_is_content_addressed(tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    data = b"\x89PNG fake mask bytes"
    artifact = store.put_bytes(data, ".png")
    sha = hashlib.sha256(data).hexdigest()
    assert artifact.sha256 == sha and artifact.key == f"{sha[:2]}/{sha}.png"
    assert store.put_bytes(data, ".png") == artifact  # same content, same key, no rewrite
    assert store.get_bytes(artifact.key, artifact.sha256) == data
    assert not list((tmp_path / "artifacts").rglob("*.tmp-*"))  # no temp files left


def test_file_url_and_put_file(tmp_path):
    source = tmp_path / "coco.json"
    source.write_text('{"images": []}')
    store = ArtifactStore(f"file://{tmp_path / 'store'}")
    artifact = store.put_file(source)
    assert artifact.key.endswith(".json")
    assert store.get_bytes(artifact.key, artifact.sha256) == source.read_bytes()


def test_altered_and_missing_artifacts_are_refused(tmp_path):
    store = ArtifactStore(str(tmp_path))
    artifact = store.put_bytes(b"weights", ".pt")
    (tmp_path / artifact.key).write_bytes(b"weightz")
    with pytest.raises(ArtifactError, match="altered"):
        store.get_bytes(artifact.key, artifact.sha256)
    (tmp_path / artifact.key).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        store.get_bytes(artifact.key, artifact.sha256)


def test_a_streamed_file_and_the_same_bytes_are_one_artifact(tmp_path):
    data = bytes(range(256)) * 40_000  # 10 MB: several 4 MiB chunks
    (tmp_path / "big.zip").write_bytes(data)
    store = ArtifactStore(str(tmp_path / "store"))
    streamed = store.put_file(tmp_path / "big.zip")
    assert streamed.new and streamed.size == len(data)
    again = store.put_bytes(data, ".zip")
    assert again == streamed and not again.new
    assert store.get_bytes(streamed.key, streamed.sha256) == data


def test_a_non_local_fsspec_store_works_through_its_url(tmp_path):
    """The store speaks fsspec only: an in-memory filesystem stands where s3:// would."""
    (tmp_path / "curve.png").write_bytes(b"png bytes")
    store = ArtifactStore("memory://tomoloop-test/artifacts")
    artifact = store.put_file(tmp_path / "curve.png")
    assert store.put_bytes(b"png bytes", ".png") == artifact
    assert store.get_bytes(artifact.key, artifact.sha256) == b"png bytes"
    assert not any(".tmp-" in p for p in fsspec.filesystem("memory").find("/tomoloop-test"))


def test_entries_list_every_file_and_an_absent_root_holds_none(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    assert store.entries() == []
    assert not (tmp_path / "store").exists()
    artifact = store.put_bytes(b"abc", ".pt")
    (entry,) = store.entries()
    assert (entry.key, entry.size) == (artifact.key, 3)
    assert entry.mtime == pytest.approx((tmp_path / "store" / artifact.key).stat().st_mtime)


def test_entries_of_a_non_local_store():
    store = ArtifactStore("memory://tomoloop-entries/artifacts")
    assert store.entries() == []
    artifact = store.put_bytes(b"abc", ".pt")
    assert [(e.key, e.size) for e in store.entries()] == [(artifact.key, 3)]
    assert store.entries()[0].mtime > 0


def test_storing_existing_content_again_marks_it_fresh(tmp_path):
    """An old unreferenced file about to be referenced again must not look collectable."""
    import os

    store = ArtifactStore(str(tmp_path))
    artifact = store.put_bytes(b"weights", ".pt")
    os.utime(tmp_path / artifact.key, (0, 0))
    store.put_bytes(b"weights", ".pt")
    assert store.entries()[0].mtime > 1e9


def test_a_local_fork_links_every_artifact_and_then_goes_its_own_way(tmp_path):
    store = ArtifactStore(str(tmp_path / "home" / "artifacts"))
    kept = [store.put_bytes(b"weights", ".pt"), store.put_bytes(b'{"images": []}', ".json")]
    leftover = tmp_path / "home" / "artifacts" / f"{kept[0].key}.tmp-{'0' * 32}"
    leftover.write_bytes(b"half")  # a killed write
    fork = store.fork(str(tmp_path / "fork"))
    assert [e.key for e in fork.entries()] == sorted(a.key for a in kept)  # no leftover
    for artifact in kept:
        assert fork.get_bytes(artifact.key, artifact.sha256) == store.get_bytes(
            artifact.key, artifact.sha256
        )
        original, linked = (
            root / artifact.key for root in (tmp_path / "home/artifacts", tmp_path / "fork")
        )
        assert original.stat().st_ino == linked.stat().st_ino  # a hard link: no bytes copied
    later = fork.put_bytes(b"the control's model", ".pt")
    assert later.new and later.key not in {e.key for e in store.entries()}
    store.remove(kept[0].key)  # the original's `db gc` leaves the fork whole
    assert fork.get_bytes(kept[0].key, kept[0].sha256) == b"weights"


def test_a_fork_of_a_non_local_store_copies_each_artifact():
    store = ArtifactStore("memory://forks/source")
    artifact = store.put_bytes(b"weights", ".pt")
    fork = store.fork("memory://forks/fork")
    assert [e.key for e in fork.entries()] == [artifact.key]
    assert fork.get_bytes(artifact.key, artifact.sha256) == b"weights"
    store.remove(artifact.key)
    assert fork.get_bytes(artifact.key, artifact.sha256) == b"weights"


def test_a_fork_copies_where_a_hard_link_cannot_be_made(tmp_path, monkeypatch):
    import errno
    import os

    def cross_device(source, path):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    store = ArtifactStore(str(tmp_path / "store"))
    artifact = store.put_bytes(b"weights", ".pt")
    monkeypatch.setattr(os, "link", cross_device)
    fork = store.fork(str(tmp_path / "fork"))
    assert fork.get_bytes(artifact.key, artifact.sha256) == b"weights"
    original, copied = tmp_path / "store" / artifact.key, tmp_path / "fork" / artifact.key
    assert original.stat().st_ino != copied.stat().st_ino
    assert not list((tmp_path / "fork").rglob("*.tmp-*"))
