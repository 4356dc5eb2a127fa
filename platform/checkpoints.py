"""Reading a checkpoint someone may have handed you: weights only, never code.

Everything tomoloop saves with ``torch.save`` is a dict of tensors, numbers, strings,
lists, tuples and dicts, which ``torch.load(weights_only=True)`` reads. Any other pickled
object is refused: unpickling it could run whatever code the file carries.
"""

from __future__ import annotations

import io
import pickle
import zipfile

import torch

from tomoloop.errors import TomoloopError


class CheckpointError(TomoloopError):
    """A checkpoint cannot be read, or holds more than weights and plain metadata."""


def read_checkpoint(data: bytes, what: str) -> dict:
    """The dict a checkpoint (``torch.save`` bytes) holds, its tensors on the CPU.

    Raises:
        CheckpointError: naming ``what`` (e.g. "model 7's checkpoint"), when the bytes hold
            a pickled Python object besides tensors and plain values, are not a checkpoint,
            or do not hold a dict.
    """
    if not zipfile.is_zipfile(io.BytesIO(data)):  # torch.save writes a zip archive
        raise CheckpointError(f"{what} is not a readable checkpoint (not a torch.save file)")
    try:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{what} is refused: it is not a plain weights checkpoint (it holds Python "
            "objects besides tensors, numbers and strings, whose loading could run code); "
            "use a checkpoint tomoloop saved"
        ) from exc
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise CheckpointError(f"{what} is not a readable checkpoint ({reason})") from exc
    if not isinstance(saved, dict):
        raise CheckpointError(f"{what} holds a {type(saved).__name__}, not a tomoloop checkpoint")
    return saved
