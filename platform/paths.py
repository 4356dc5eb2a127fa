"""Confinement of file paths that arrive from outside (documents, registry rows).

A path a user types on the command line is theirs to choose; a path *inside* a document
(a COCO ``file_name``) or a stored key (an artifact key) is data, and may only name a
file under its own root. :func:`confined` is the one check.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from tomoloop.errors import TomoloopError

_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,16}){0,2}")


class PathConfinementError(TomoloopError):
    """A path from a document or the registry points outside the root it belongs to."""


def confined(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refusing anything that could leave ``root``.

    Refused: an empty name, a NUL byte, an absolute path (POSIX or Windows, drive or UNC),
    any ``..`` component, and a path that resolves outside ``root`` through a symlink.

    Raises:
        PathConfinementError: naming ``what`` carried the path and why it was refused.
    """
    reason = _unsafe(relative)
    if reason is None:
        path = root / relative
        if not path.resolve().is_relative_to(root.resolve()):
            reason = "it resolves (through a symbolic link) outside the root"
    if reason is not None:
        raise PathConfinementError(
            f"{what} names {relative!r}, which is refused because {reason}; "
            f"paths in it must stay under {root}"
        )
    return path


def _unsafe(relative: str) -> str | None:
    """Why a relative name is unsafe before touching the file system (None: it is not)."""
    if not relative:
        return "it is empty"
    if "\0" in relative:
        return "it contains a NUL byte"
    windows = PureWindowsPath(relative)
    if PurePosixPath(relative).is_absolute() or windows.drive or windows.root:
        return "it is absolute"
    if ".." in PurePosixPath(relative.replace("\\", "/")).parts:
        return "it has a '..' component"
    return None


def artifact_key(sha256: str, suffix: str) -> str:
    """The store key of content with this sha256 (hex) and file suffix: ``ab/ab12….png``.

    Raises:
        PathConfinementError: the suffix is not one or two short alphanumeric extensions.
    """
    if not _SUFFIX.fullmatch(suffix):
        raise PathConfinementError(
            f"artifact suffix {suffix!r} is refused: use a file extension such as '.png'"
        )
    return f"{sha256[:2]}/{sha256}{suffix}"


def check_artifact_key(key: str, sha256: str) -> None:
    """Refuse a stored key that is not the location of content ``sha256``.

    Keys come back from the registry; a row edited to ``../../elsewhere`` or to another
    artifact's key is refused before any file is opened.

    Raises:
        PathConfinementError: the key does not belong to ``sha256``.
    """
    prefix = f"{sha256[:2]}/{sha256}"
    suffix = key[len(prefix) :]
    if not (
        re.fullmatch(r"[0-9a-f]{64}", sha256)
        and key.startswith(prefix)
        and _SUFFIX.fullmatch(suffix)
    ):
        raise PathConfinementError(
            f"artifact key {key!r} is not the store location of sha256 {sha256[:12]}…: "
            f"expected {prefix}<suffix>; the registry row was altered — restore it"
        )


def store_file_kind(name: str) -> str | None:
    """What a file of the artifact store is, from its name relative to the store's root:
    ``"artifact"`` (``ab/ab12…<suffix>``), ``"temporary"`` (a put's ``….tmp-<hex>`` not
    renamed into place yet, or left by a killed one), or None: a file the store does not
    write (it is never garbage-collected).
    """
    match = re.fullmatch(r"([0-9a-f]{2})/([0-9a-f]{64})(.*?)(\.tmp-[0-9a-f]{32})?", name)
    if match is None or not match[2].startswith(match[1]) or not _SUFFIX.fullmatch(match[3]):
        return None
    return "artifact" if match[4] is None else "temporary"
