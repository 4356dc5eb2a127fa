"""Output locations a command writes: checked before any work, written through temporary
names beside the target.

:func:`check_outputs` is the one check every command runs on its outputs before it starts:
an output never is (or resolves to, through symbolic or hard links) one of the command's
inputs, two outputs never share a path, an output folder that ``--overwrite`` would replace
never holds an input or the working folder, and every output can be created where it is.
:func:`temp_file_beside` / :func:`temp_dir_beside` make the temporary names that are renamed
into place, with the modes the umask gives (like every Unix tool), and :func:`writing`
turns a failed write (read-only file system, full disk, no permission) into one line.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tomoloop.errors import OutputError

# errno values of a write that the user can fix (space, permissions, a wrong path)
_ELSEWHERE = "choose another place"
_WRITE_ERRNOS: dict[int | None, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "free space or choose another place"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space or choose another place"),
    errno.EROFS: ("the file system is read-only", _ELSEWHERE),
    errno.EACCES: ("permission denied", _ELSEWHERE),
    errno.EPERM: ("permission denied", _ELSEWHERE),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", _ELSEWHERE),
    errno.EISDIR: ("it is a folder", _ELSEWHERE),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter name"),
    errno.ENOENT: ("a folder on the path cannot be made there", _ELSEWHERE),
}
"""What a failed write's errno means, and what to do about it."""


@dataclass(frozen=True)
class Output:
    """One output of a command: the option that names it (``--out``), its path, whether it
    is a folder, and whether an existing folder there is replaced (``--overwrite``).
    """

    flag: str
    path: Path
    folder: bool = False
    replaces: bool = False


def check_outputs(
    inputs: Mapping[str, str | os.PathLike[str] | None], outputs: Sequence[Output]
) -> None:
    """Refuse outputs that would destroy an input or each other, or cannot be created.

    Args:
        inputs: what names each input (``"GRAY"``, ``"--labels"``) → its path; None skipped.
        outputs: the command's outputs.

    Raises:
        OutputError: naming the option, the path and what to do instead.
    """
    given = {name: Path(p) for name, p in inputs.items() if p is not None}
    for k, out in enumerate(outputs):
        for other in outputs[:k]:
            if _same_location(out.path, other.path):
                raise OutputError(
                    f"{other.flag} and {out.flag} are both {out.path}: give each output its "
                    "own path"
                )
        for name, path in given.items():
            if _same_location(out.path, path):
                raise OutputError(
                    f"{out.flag} {out.path} is the input {name} ({path}): choose another "
                    "path (inputs are never overwritten)"
                )
            if out.replaces and _inside(path, out.path):
                raise OutputError(
                    f"{out.flag} {out.path} --overwrite would replace the folder that holds "
                    f"the input {name} ({path}): choose a new folder"
                )
        if out.replaces and _inside(Path.cwd(), out.path):
            raise OutputError(
                f"{out.flag} {out.path} --overwrite would replace the working folder: "
                "choose a new folder"
            )
        _check_creatable(out)


def _same_location(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path, or (both existing) the same
    device and inode (hard links).
    """
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (after resolving links)."""
    return path.resolve().is_relative_to(folder.resolve())


def _check_creatable(out: Output) -> None:
    """Refuse an output of the wrong kind, a file that exists, an output below a file, or in
    a folder we cannot write."""
    path = out.path
    if path.is_dir() and not out.folder:
        raise OutputError(f"{out.flag} {path} is a folder: give a file name, e.g. {path}/out.tif")
    if path.exists() and not path.is_dir() and out.folder:
        raise OutputError(f"{out.flag} {path} is a file: give a new folder")
    if path.exists() and not out.folder:
        raise OutputError(f"{out.flag} {path} exists: choose a new file (nothing is overwritten)")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{out.flag} {path}: {parent} is a file, not a folder: fix the path")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "the file system is read-only" if _read_only(parent) else "permission denied"
        raise OutputError(
            f"{out.flag} {path}: cannot write in {parent} ({reason}): choose a writable place"
        )


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


@contextmanager
def writing(flag: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a failed write (full disk, read-only, no permission, wrong path) into an
    OutputError that names the output; other errors pass unchanged.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        reason, advice = _WRITE_ERRNOS[exc.errno]
        raise OutputError(
            f"cannot write {flag} {path}: {reason} ({exc.strerror}); nothing was written: {advice}"
        ) from exc


def check_new(target: Path) -> None:
    """Refuse an output that exists at all (commands that never overwrite)."""
    if target.exists():
        raise OutputError(f"{target} exists: choose a new --out (nothing is overwritten)")


def current_umask() -> int:
    """The process umask (read from /proc on Linux, else by setting it back at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file_beside(target: Path) -> Path:
    """A new empty hidden file beside ``target`` to write into and rename into place; its
    mode is what ``open()`` would give (0666 less the umask), not mkstemp's 0600.
    """
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    return Path(name)


def temp_dir_beside(target: Path) -> Path:
    """A new hidden folder beside ``target`` to fill and rename into place; its mode is
    what ``mkdir`` would give (0777 less the umask), not mkdtemp's 0700.
    """
    name = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.chmod(name, 0o777 & ~current_umask())
    return Path(name)


@contextmanager
def new_folder(flag: str, target: Path) -> Iterator[Path]:
    """A hidden folder beside ``target`` to fill, renamed to ``target`` when the block ends
    without error and removed when it does not: a folder output is there whole or not at all.

    Raises:
        OutputError: ``target`` exists, or the disk refuses the write (named by ``flag``).
    """
    check_new(target)
    with writing(flag, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(target)
        try:
            yield tmp
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
