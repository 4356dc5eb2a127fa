"""Slice scores: a model's uncertainty per slice, and the top unlabelled ones."""

from __future__ import annotations

from sqlalchemy import and_, exists, select

from tomoloop.db.models import (
    Annotation,
    RoundItem,
    SliceScore,
)
from tomoloop.db.registry.store import _CHUNK, Store
from tomoloop.db.states import (
    ItemState,
    Kind,
)
from tomoloop.labels.tiers import Tier


class ScoreStore(Store):
    """Slice scores."""

    def record_scores(self, model_id: int, scores: dict[int, float], method: str = "") -> None:
        """Store a model's score per slice id (replacing that model's earlier scores)."""
        rows = [
            {"model_version_id": model_id, "slice_id": k, "score": float(v), "method": method}
            for k, v in scores.items()
        ]
        with self.session() as s:
            for start in range(0, len(rows), _CHUNK):
                statement = self._insert(SliceScore)
                s.connection().execute(
                    statement.on_conflict_do_update(
                        index_elements=["model_version_id", "slice_id"],
                        set_={
                            "score": statement.excluded.score,
                            "method": statement.excluded.method,
                        },
                    ),
                    rows[start : start + _CHUNK],
                )

    def top_unlabelled(self, model_id: int, k: int) -> list[tuple[int, float]]:
        """The k highest-scored slices of a model that no person has labelled and that are
        not waiting in an open round: ``[(slice id, score), ...]``, best first.

        Walks the (model, score) index from the top and skips labelled or pending slices
        with indexed anti-joins, so it reads about k rows, not the whole table.
        """
        labelled = exists().where(
            and_(
                Annotation.slice_id == SliceScore.slice_id,
                Annotation.tier >= Tier.ANNOTATOR,
                Annotation.kind == Kind.SEMANTIC.value,
            )
        )
        pending = exists().where(
            and_(RoundItem.slice_id == SliceScore.slice_id, RoundItem.state == ItemState.PENDING)
        )
        query = (
            select(SliceScore.slice_id, SliceScore.score)
            .where(SliceScore.model_version_id == model_id, ~labelled, ~pending)
            .order_by(SliceScore.score.desc(), SliceScore.slice_id)
            .limit(k)
        )
        with self.session() as s:
            return [(slice_id, score) for slice_id, score in s.execute(query)]
