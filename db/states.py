"""Every state a registry row can be in, as ``str`` enums (a member equals its stored
string), and the CHECK constraint text each one's column gets (:func:`one_of`).

Label tiers are core (:class:`tomoloop.labels.Tier`): training weighs them too.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Kind(enum.StrEnum):
    """What a label holds: a class per pixel, or one mask per particle."""

    SEMANTIC = "semantic"  # mask_rle: {"size": [h, w], "classes": {...}}
    INSTANCE = "instance"  # mask_rle: {"size": [h, w], "instances": [{"class", "counts"}]}


class Stage(enum.StrEnum):
    """A model version's place: new, the one in use for its name, or replaced."""

    CANDIDATE = "candidate"
    CHAMPION = "champion"
    RETIRED = "retired"


class RunStatus(enum.StrEnum):
    """A training run's status; the last three are ends (``ended_at`` set for two of them)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"  # it raised, or its process is gone (``failure`` says why)
    INTERRUPTED = "interrupted"  # allowed by the schema since 0001; tomoloop writes failed

    @property
    def ended(self) -> bool:
        """The run is over (finished or failed): it has an end time."""
        return self in (RunStatus.FINISHED, RunStatus.FAILED)


class RoundStatus(enum.StrEnum):
    """An active-learning round: waiting for labels, or every item answered."""

    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"  # allowed by the schema since 0001; tomoloop closes rounds only


class ItemState(enum.StrEnum):
    """A round item: its Label Studio task waits, was answered, or was skipped."""

    PENDING = "pending"
    ANNOTATED = "annotated"
    SKIPPED = "skipped"


class ReviewState(enum.StrEnum):
    """A review (see :class:`tomoloop.db.models.Review` for the life of one)."""

    QUEUED = "queued"
    PUSHING = "pushing"
    PENDING = "pending"
    APPROVED = "approved"
    CORRECTED = "corrected"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"

    @classmethod
    def open(cls) -> tuple[ReviewState, ...]:
        """States of a review no reviewer has answered yet."""
        return (cls.QUEUED, cls.PUSHING, cls.PENDING)


class EventStatus(enum.StrEnum):
    """What tomoloop made of a Label Studio annotation event."""

    STORED = "stored"  # a registry annotation
    SKIPPED = "skipped"  # the annotator skipped or cancelled
    REJECTED = "rejected"  # not usable; the event's reason says why


class EventVia(enum.StrEnum):
    """How a Label Studio event arrived."""

    WEBHOOK = "webhook"
    POLL = "poll"


class PoolState(enum.StrEnum):
    """A slice as active learning sees it (computed, not stored)."""

    LABELLED = "labelled"  # a person labelled it
    PENDING = "pending"  # waiting in an open round
    FREE = "free"


def one_of(column: str, values: Iterable[str]) -> str:
    """CHECK constraint text: ``column`` holds one of ``values`` (``"x IN ('a', 'b')"``)."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"
