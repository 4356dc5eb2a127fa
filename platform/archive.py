"""Deterministic zip archives: the same folder always gives the same bytes (and sha256)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

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
