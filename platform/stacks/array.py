"""A :class:`~tomoloop.stacks.stack.Stack` seen as a read-only NumPy-like array, for
libraries that take any array-like (napari, dask) and index it themselves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoloop.stacks.stack import AXES, Index, Stack

Key = int | slice | tuple[int | slice, ...]


@dataclass(frozen=True)
class StackArray:
    """A stack's voxels (z, y, x) as an array-like: ``shape``, ``dtype``, ``ndim`` and
    indexing by ints and slices, which reads only the voxels indexed (one z slice for
    ``array[k]``). Values come out as ``dtype`` (the stack's own unless given: booleans
    as uint8 for viewers that show only integer labels).
    """

    stack: Stack
    dtype: np.dtype

    @classmethod
    def of(cls, stack: Stack, dtype: np.dtype | type | None = None) -> StackArray:
        """``stack`` as an array of ``dtype`` (default the stack's)."""
        return cls(stack, np.dtype(stack.dtype if dtype is None else dtype))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(nz, ny, nx) in voxels."""
        return self.stack.shape

    @property
    def ndim(self) -> int:
        return len(AXES)

    def __getitem__(self, key: Key) -> np.ndarray:
        """The voxels at ``key``: up to three ints or slices (any step), as NumPy indexes
        a (z, y, x) array; an int drops its axis.

        Raises:
            IndexError: more than three indices, an int outside its axis, or a kind of
                index other than int and slice.
        """
        keys = key if isinstance(key, tuple) else (key,)
        if len(keys) > len(AXES):
            raise IndexError(f"{len(keys)} indices for a 3D (z, y, x) stack")
        keys = (*keys, *[slice(None)] * (len(AXES) - len(keys)))
        spans: list[Index] = []
        steps: list[slice] = []  # what to take of each read span (an int's axis is gone)
        picked_shape: list[int] = []
        for k, n in zip(keys, self.shape, strict=True):
            if isinstance(k, int | np.integer) and not isinstance(k, bool):
                if not -n <= k < n:
                    raise IndexError(f"index {k} outside an axis of length {n}")
                spans.append(int(k) % n)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                picked = range(start, stop, step)
                picked_shape.append(len(picked))
                spans.append(slice(min(picked), max(picked) + 1) if picked else slice(0, 0))
                steps.append(slice(None, None, step))  # from ``start``: the span's first or last
            else:
                raise IndexError(f"cannot index a stack with {k!r}: use ints and slices")
        if 0 in picked_shape:
            return np.empty(picked_shape, dtype=self.dtype)
        block = self.stack._select(spans[0], spans[1], spans[2])
        return np.asarray(block[tuple(steps)], dtype=self.dtype)
