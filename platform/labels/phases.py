"""Phase maps: names for the integer values of a label stack.

A phase map is written ``pore=0,nmc=1,cbd=2`` on the command line. Order is the
class-index order used by semantic masks: the first phase is class 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from tomoloop.errors import PhaseMapError, StackValidationError
from tomoloop.stacks.checks import present_values

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
# Label stacks are uint8 or uint16, and tables indexed by label value (value → class) are
# allocated up to the largest value: a larger value is a typing mistake, not a phase.
MAX_LABEL_VALUE = 65535

IGNORE = 255
"""Class index of an unlabelled pixel (nobody painted it) in uint8 class-index arrays;
semantic classes are 0 … IGNORE − 1. Losses, patch centres and metrics skip it."""


@dataclass(frozen=True)
class PhaseMap:
    """Ordered, one-to-one mapping between phase names and label values (ints ≥ 0)."""

    names: tuple[str, ...]
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.names:
            raise PhaseMapError("a phase map needs at least one phase, e.g. 'pore=0,solid=1'")
        if len(self.names) != len(self.values):
            raise PhaseMapError("a phase map needs exactly one value per name")
        for name in self.names:
            if not _NAME.match(name):
                raise PhaseMapError(
                    f"phase name {name!r} is not valid: use letters, digits, '_' or '-', "
                    "starting with a letter"
                )
        for name, value in zip(self.names, self.values, strict=True):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise PhaseMapError(f"phase value {value!r} is not an integer ≥ 0")
            if value > MAX_LABEL_VALUE:
                raise PhaseMapError(
                    f"phase {name}={value} is out of range: label values are 0–"
                    f"{MAX_LABEL_VALUE} (uint8 or uint16 label stacks), e.g. {name}=2"
                )
        if len(set(self.names)) != len(self.names):
            raise PhaseMapError(f"phase names repeat in {self}: give each phase one name")
        if len(set(self.values)) != len(self.values):
            raise PhaseMapError(f"label values repeat in {self}: give each value one name")

    @classmethod
    def parse(cls, text: str) -> PhaseMap:
        """Parse ``"pore=0,nmc=1,cbd=2"``."""
        names: list[str] = []
        values: list[int] = []
        for item in (part.strip() for part in text.split(",")):
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or not value.strip().isdigit():
                negative = value.strip().startswith("-") and value.strip()[1:].isdigit()
                raise PhaseMapError(
                    f"cannot read phase {item!r} in {text!r}: "
                    + ("label values are ≥ 0; " if negative else "")
                    + "write NAME=VALUE pairs separated by commas, e.g. 'pore=0,nmc=1,cbd=2'"
                )
            names.append(name.strip())
            values.append(int(value))
        return cls(tuple(names), tuple(values))

    @classmethod
    def from_values(cls, values: Iterable[int]) -> PhaseMap:
        """Default names for values found in a stack: 0 is ``background``, v is ``phase<v>``."""
        ordered = sorted({int(v) for v in values})
        return cls(tuple("background" if v == 0 else f"phase{v}" for v in ordered), tuple(ordered))

    def __str__(self) -> str:
        return ",".join(f"{n}={v}" for n, v in self)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(zip(self.names, self.values, strict=True))

    def __len__(self) -> int:
        return len(self.names)

    def value(self, ref: str | int) -> int:
        """Label value of a phase given by name or by value (``"nmc"`` or ``"1"`` or ``1``)."""
        if isinstance(ref, str) and ref in self.names:
            return self.values[self.names.index(ref)]
        if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
            value = int(ref)
            if value in self.values:
                return value
        raise PhaseMapError(f"phase {ref!r} is not in the phase map {self}: use one of its names")

    def name(self, value: int) -> str:
        return self.names[self.values.index(value)]

    def class_index(self, value: int) -> int:
        """Position of a label value in the map: the semantic class index."""
        return self.values.index(value)


def class_index_lut(phases: PhaseMap) -> np.ndarray:
    """Lookup table label value → class index (position in the phase map): uint8, or uint16
    from 256 phases on (class 255 would read as :data:`tomoloop.labels.IGNORE` in uint8).
    """
    dtype = np.uint8 if len(phases) <= IGNORE else np.uint16
    lut = np.zeros(max(phases.values) + 1, dtype=dtype)
    lut[list(phases.values)] = np.arange(len(phases), dtype=dtype)
    return lut


def undeclared_values(image: np.ndarray, phases: PhaseMap) -> list[int]:
    """Label values in ``image`` that ``phases`` does not name, sorted."""
    top = max(phases.values)
    if len(phases) == top + 1 and image.size and image.min() >= 0 and image.max() <= top:
        return []  # the map declares every value 0..top: a min/max check is enough
    return sorted(set(present_values(image).tolist()) - set(phases.values))


def check_declared(image: np.ndarray, phases: PhaseMap, where: str) -> None:
    """Raise StackValidationError if ``image`` holds a value ``phases`` does not name, or
    ``phases`` names a value ``image``'s integer type cannot hold.
    """
    if image.dtype.kind in "iu":
        top = np.iinfo(image.dtype).max
        name, value = max(phases, key=lambda pair: pair[1])
        if value > top:
            raise StackValidationError(
                f"{where} stores {image.dtype} (values up to {top}): phase {name}={value} can "
                "never occur in it: fix --phases"
            )
    bad = undeclared_values(image, phases)
    if bad:
        raise StackValidationError(
            f"{where} holds label values {bad[:10]} that the phase map {phases} does not "
            "declare: add them to --phases (NAME=VALUE) or fix the label stack"
        )
