"""Stacks at URLs (``s3://bucket/key.tif``, any fsspec protocol): opened as file-likes
that fetch byte ranges on demand, so a slice costs the bytes of its pages, not the object.

Credentials and endpoints come from the filesystem's own configuration (for S3: the
``AWS_*`` environment variables such as ``AWS_ENDPOINT_URL``, or ``~/.aws``); none is
passed here or shown in a message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from tomoloop.errors import StackReadError

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

# Bytes fetched past each read (fsspec "readahead" cache): one request covers a TIFF
# directory or a whole page's data; a slice costs about its own bytes plus this.
REMOTE_BLOCK_BYTES = 1 << 16


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a remote object (``scheme://…``) rather than a local file."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class RemoteFile:
    """An object in a filesystem, not yet opened: tifffile calls :meth:`open` and closes
    the file with the TIFF."""

    fs: AbstractFileSystem
    path: str  # inside the filesystem: bucket/key for S3
    block_bytes: int = REMOTE_BLOCK_BYTES

    def open(self) -> IO[bytes]:
        """A seekable binary file reading byte ranges on demand."""
        return self.fs.open(self.path, "rb", block_size=self.block_bytes, cache_type="readahead")


def open_remote(url: str, block_bytes: int = REMOTE_BLOCK_BYTES) -> RemoteFile:
    """The object at ``url``, checked to exist, to be read ``block_bytes`` and more at a
    time.

    Raises:
        StackReadError: no filesystem for the scheme, the object does not exist, or the
            store refused access.
    """
    import fsspec  # only when a URL is opened: every local stack would pay its import

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise StackReadError(
            f"cannot read {url}: {exc} (for s3:// install tomoloop's s3 extra: "
            "pip install 'tomoloop[s3]')"
        ) from exc
    try:
        found = fs.isfile(path)
    except PermissionError as exc:
        raise StackReadError(
            f"access to {url} was refused ({exc}): check the credentials in the environment"
        ) from exc
    if not found:
        raise StackReadError(f"stack {url} does not exist: check the URL")
    return RemoteFile(fs, path, block_bytes)
