"""Label Studio annotation events as tomoloop handled them (each key once)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

from sqlalchemy import select

from tomoloop.db import entities
from tomoloop.db.entities import NewEvent, frozen_all
from tomoloop.db.models import (
    LabelStudioEvent,
    utcnow,
)
from tomoloop.db.registry.store import _CHUNK, Store


class EventStore(Store):
    """Label Studio events."""

    def record_ls_event(self, event: NewEvent) -> bool:
        """Record a handled Label Studio event; False if its key was already recorded."""
        with self.session() as s:
            inserted = s.scalar(
                self._insert(LabelStudioEvent)
                .values(**asdict(event), received_at=utcnow())
                .on_conflict_do_nothing()
                .returning(LabelStudioEvent.id)
            )  # RETURNING, not rowcount: an ORM insert reports rowcount -1 on PostgreSQL
            return inserted is not None

    def ls_event_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of these event keys are already recorded."""
        wanted = list(keys)
        found: set[str] = set()
        with self.session() as s:
            for start in range(0, len(wanted), _CHUNK):
                found.update(
                    s.scalars(
                        select(LabelStudioEvent.key).where(
                            LabelStudioEvent.key.in_(wanted[start : start + _CHUNK])
                        )
                    )
                )
        return found

    def ls_events(self, status: str | None = None) -> list[entities.LabelStudioEvent]:
        query = select(LabelStudioEvent).order_by(LabelStudioEvent.id)
        if status is not None:
            query = query.where(LabelStudioEvent.status == status)
        with self.session() as s:
            return frozen_all(s.scalars(query))
