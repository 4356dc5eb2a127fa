"""Content-addressed artifact store behind an fsspec URL.

Files live at ``<root>/<sha256[:2]>/<sha256><suffix>``; the registry stores the key
(``ab/ab12….png``) and the sha256, never the root, so moving the store (a local folder to
an S3-compatible bucket) is a change of ``TOMOLOOP_ARTIFACTS_URL``. Writes go to a
temporary name and are renamed into place; reads are verified by sha256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tomoloop.errors import TomoloopError
from tomoloop.paths import artifact_key, check_artifact_key, store_file_kind

_CHUNK = 1 << 22


class ArtifactError(TomoloopError):
    """An artifact is missing or its content does not match its sha256."""


@dataclass(frozen=True)
class Artifact:
    """A stored artifact: its key in the store, sha256 (hex) and size in bytes.

    ``new`` tells whether this put created the file (False: the content was there already).
    """

    key: str
    sha256: str
    size: int
    new: bool = field(default=False, compare=False)


@dataclass(frozen=True, order=True)
class StoredFile:
    """A file in the store: its name relative to the root (an artifact's key, or a
    temporary name), size in bytes and last modification (seconds since the epoch)."""

    key: str
    size: int
    mtime: float


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _linked(source: str, path: str) -> bool:
    """Whether ``path`` could be made a hard link of ``source`` (not across file systems,
    nor where links are not allowed)."""
    try:
        os.link(source, path)
    except OSError:
        return False
    return True


def _mtime(info: dict) -> float:
    """A listing entry's modification time in seconds since the epoch, whatever the
    filesystem calls it (local ``mtime``, S3 ``LastModified``, in-memory ``created``)."""
    stamp = info.get("mtime", info.get("LastModified", info.get("created", 0.0)))
    return stamp.timestamp() if isinstance(stamp, datetime) else float(stamp)


class ArtifactStore:
    """Put and get immutable files by content."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self._fs, self._root = fsspec.core.url_to_fs(url)  # folders come with a put
        except ImportError as exc:
            raise ArtifactError(
                f"TOMOLOOP_ARTIFACTS_URL {url}: {exc} (for s3:// install tomoloop's s3 "
                "extra: pip install 'tomoloop[s3]')"
            ) from exc

    def _path(self, key: str) -> str:
        return f"{self._root.rstrip('/')}/{key}"

    def put_bytes(self, data: bytes, suffix: str = "") -> Artifact:
        """Store ``data``; storing the same bytes again is a no-op returning the same key."""
        sha = hashlib.sha256(data).hexdigest()
        return self._place(sha, len(data), suffix, lambda tmp: self._fs.pipe_file(tmp, data))

    def put_file(self, local_path: str | os.PathLike[str], suffix: str | None = None) -> Artifact:
        """Store a local file (suffix defaults to the file's own), streamed: the file is
        hashed and copied in chunks, never held in memory whole.
        """
        digest, size = hashlib.sha256(), 0
        with open(local_path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        suffix = os.path.splitext(local_path)[1] if suffix is None else suffix
        source = os.fspath(local_path)
        return self._place(
            digest.hexdigest(), size, suffix, lambda tmp: self._fs.put_file(source, tmp)
        )

    def _place(self, sha: str, size: int, suffix: str, write: Callable[[str], None]) -> Artifact:
        """Write content ``sha`` through ``write(temporary path)`` and rename it into
        place, unless the store holds it already."""
        key = artifact_key(sha, suffix)
        path = self._path(key)
        if self._fs.exists(path):
            if not self._touched(path):
                self._write_into(path, write)
            return Artifact(key, sha, size)
        self._fs.makedirs(self._path(sha[:2]), exist_ok=True)
        self._write_into(path, write)
        return Artifact(key, sha, size, new=True)

    def _write_into(self, path: str, write: Callable[[str], None]) -> None:
        """Write through ``write(temporary path)``, then rename to ``path``: readers see
        the whole old file or the whole new one, never part of one."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        write(tmp)
        self._fs.mv(tmp, path)

    def _touched(self, path: str) -> bool:
        """Mark existing content as just stored, so ``tomoloop db gc`` does not take an old
        unreferenced file that a transaction is about to refer to again. False when the
        filesystem cannot change a file's time (S3 objects are immutable): the caller
        writes the same content again, which makes its time now."""
        try:
            self._fs.touch(path, truncate=False)
        except (NotImplementedError, ValueError):
            return False
        return True

    def entries(self) -> list[StoredFile]:
        """Every file under the root, sorted by key; a root not created yet holds none."""
        root = self._root.rstrip("/")
        found = self._fs.find(root, detail=True) if self._fs.exists(root) else {}
        return sorted(
            StoredFile(path[len(root) :].lstrip("/"), int(info["size"]), _mtime(info))
            for path, info in found.items()
        )

    def fork(self, url: str) -> ArtifactStore:
        """The store at ``url`` (a new one) holding every artifact of this one: hard links
        where both are folders on one local file system (no bytes copied: an artifact is
        never changed in place), copies otherwise. What either stores later, the other
        never sees. Files the store did not write and leftovers of killed writes stay
        behind."""
        target = ArtifactStore(url)
        linkable = _is_local(self._fs) and _is_local(target._fs)
        for entry in self.entries():
            if store_file_kind(entry.key) != "artifact":
                continue
            source, path = self._path(entry.key), target._path(entry.key)
            target._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            if linkable and _linked(source, path):
                continue
            target._write_into(path, lambda tmp, source=source: self._copy_out(source, target, tmp))
        return target

    def _copy_out(self, source: str, target: ArtifactStore, path: str) -> None:
        """The file ``source`` of this store streamed into ``path`` of ``target``."""
        with self._fs.open(source, "rb") as read, target._fs.open(path, "wb") as write:
            shutil.copyfileobj(read, write, _CHUNK)

    def remove(self, key: str) -> None:
        """Delete an artifact (undoing a put whose transaction failed, or ``db gc``)."""
        self._fs.rm_file(self._path(key))

    def get_bytes(self, key: str, sha256: str) -> bytes:
        """The artifact's bytes, after checking them against ``sha256``.

        Raises:
            PathConfinementError: ``key`` is not where content ``sha256`` is stored.
            ArtifactError: missing, or altered since it was stored.
        """
        check_artifact_key(key, sha256)
        path = self._path(key)
        try:
            data = self._fs.cat_file(path)
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"artifact {key} is missing from {self.url}: restore it from a backup or "
                "re-create the dataset/model that produced it"
            ) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ArtifactError(
                f"artifact {key} in {self.url} was altered (sha256 {actual[:12]}…, expected "
                f"{sha256[:12]}…): it will not be used; restore the original file"
            )
        return data
