"""Deterministic zip archives: the same folder always gives the same bytes (and sha256)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from tomoloop.errors import OutputError

_EPOCH = (1980, 1, 1, 0, 0, 0)


def zip_folder(folder: str | os.PathLike[str]) -> bytes:
    """Zip every file below ``folder`` (sorted paths, fixed timestamps, deflate)."""
    root = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def unzip_to(data: bytes, out_dir: str | os.PathLike[str]) -> int:
    """Unpack a zip into a new folder, atomically (temp folder + rename); the file count.

    Raises:
        OutputError: ``out_dir`` exists, or a member would land outside it.
    """
    target = Path(out_dir)
    if target.exists():
        raise OutputError(f"{target} exists: choose a new --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            for member in names:
                if not (tmp / member).resolve().is_relative_to(tmp.resolve()):
                    raise OutputError(f"archive member {member!r} points outside {target}")
            archive.extractall(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len([n for n in names if not n.endswith("/")])
