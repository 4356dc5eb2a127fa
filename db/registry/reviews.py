"""Reviews (an annotator's label sent to a second person) and agreements (per-class Dice
of two people's labels of one slice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func, select, update

from tomoloop.active.review import AGREEMENT_KINDS
from tomoloop.db import entities
from tomoloop.db.entities import NewAgreement, frozen_all
from tomoloop.db.models import (
    Agreement,
    Annotation,
    Review,
    utcnow,
)
from tomoloop.db.registry.annotations import _newest_versions
from tomoloop.db.registry.store import Store
from tomoloop.db.states import (
    Kind,
    ReviewState,
)
from tomoloop.labels.tiers import Tier

# the states review_summary counts (a superseded review is replaced by its update's)
REVIEW_STATES = tuple(s.value for s in ReviewState if s is not ReviewState.SUPERSEDED)


class ReviewStore(Store):
    """Reviews and agreements."""

    def task_labels(self, ls_task_id: int, slice_id: int) -> list[entities.Annotation]:
        """The newest tier-annotator semantic label of each Label Studio annotation of one
        task of one slice (one per annotation an annotator submitted), oldest first.
        """
        with self.session() as s:
            return frozen_all(
                s.scalars(
                    select(Annotation)
                    .where(Annotation.id.in_(_newest_versions(Tier.ANNOTATOR)))
                    .where(
                        Annotation.ls_task_id == ls_task_id,
                        Annotation.slice_id == slice_id,
                        Annotation.kind == Kind.SEMANTIC.value,
                    )
                    .order_by(Annotation.id)
                )
            )

    def add_review(
        self,
        annotation_id: int,
        dataset: str,
        reasons: Sequence[str],
        model_iou: float | None,
    ) -> None:
        """Queue an annotator's label for review (once per label: a repeat is a no-op)."""
        annotation = self.annotation(annotation_id)
        with self.session() as s:
            s.execute(
                self._insert(Review)
                .values(
                    annotation_id=annotation_id,
                    slice_id=annotation.slice_id,
                    dataset=dataset,
                    reasons=",".join(reasons),
                    model_iou=model_iou,
                    state=ReviewState.QUEUED,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing()
            )

    def supersede_reviews(self, annotation_id: int) -> int:
        """Mark the open reviews of earlier versions of this label's Label Studio
        annotation ``superseded`` (the newer version is routed afresh); how many.
        """
        annotation = self.annotation(annotation_id)
        earlier = select(Annotation.id).where(
            Annotation.ls_annotation_id == annotation.ls_annotation_id,
            Annotation.tier == annotation.tier,
            Annotation.id < annotation_id,
        )
        with self.session() as s:
            done = s.scalars(
                update(Review)
                .where(Review.annotation_id.in_(earlier), Review.state.in_(ReviewState.open()))
                .values(state=ReviewState.SUPERSEDED, resolved_at=utcnow())
                .returning(Review.id)
            )
            return len(list(done))

    def add_agreements(self, rows: Sequence[NewAgreement]) -> None:
        """Record per-class Dice of label pairs (a pair and class already recorded is kept)."""
        values = [asdict(r) for r in rows]
        if values:
            with self.session() as s:
                s.execute(self._insert(Agreement).values(values).on_conflict_do_nothing())

    def reviews(self, dataset: str) -> list[entities.Review]:
        """The dataset's reviews, oldest first."""
        with self.session() as s:
            return frozen_all(
                s.scalars(select(Review).where(Review.dataset == dataset).order_by(Review.id))
            )

    def has_reviews(self, dataset: str) -> bool:
        with self.session() as s:
            return bool(s.scalar(select(exists().where(Review.dataset == dataset))))

    def claim_reviews(self, dataset: str, stale_s: float = 600.0) -> list[entities.Review]:
        """Claim the dataset's queued reviews for pushing (state ``pushing``), and ones a
        pusher claimed more than ``stale_s`` seconds ago without finishing; of two syncs
        at once, each review goes to one.
        """
        stale = utcnow() - timedelta(seconds=stale_s)
        claimable = (Review.state == ReviewState.QUEUED) | (
            (Review.state == ReviewState.PUSHING) & (Review.claimed_at < stale)
        )
        with self.session() as s:
            claimed = list(
                s.scalars(
                    update(Review)
                    .where(Review.dataset == dataset, claimable)
                    .values(state=ReviewState.PUSHING, claimed_at=utcnow())
                    .returning(Review.id)
                )
            )
            claimed_rows = select(Review).where(Review.id.in_(claimed)).order_by(Review.id)
            return frozen_all(s.scalars(claimed_rows))

    def release_reviews(self, review_ids: Sequence[int]) -> None:
        """Put claimed reviews back in the queue (their push failed)."""
        with self.session() as s:
            s.execute(
                update(Review)
                .where(Review.id.in_(list(review_ids)), Review.state == ReviewState.PUSHING)
                .values(state=ReviewState.QUEUED, claimed_at=None)
            )

    def review(self, review_id: int) -> entities.Review:
        return self._get(Review, review_id, "review")

    def set_review_tasks(self, tasks: dict[int, int]) -> None:
        """Record the review project's task of each claimed review (``{review id: task
        id}``); they become ``pending``.
        """
        with self.session() as s:
            for review_id, task_id in tasks.items():
                s.execute(
                    update(Review)
                    .where(Review.id == review_id, Review.state == ReviewState.PUSHING)
                    .values(ls_task_id=task_id, state=ReviewState.PENDING)
                )

    def resolve_review(
        self, review_id: int, state: str, expert_annotation_id: int | None = None
    ) -> None:
        """Record a reviewer's answer: ``approved`` / ``corrected`` with the tier-expert
        label — only forward: a newer label (higher id) replaces an older one, never the
        reverse, as in :meth:`best_annotations` — or ``skipped``, which never undoes an
        answer.
        """
        query = update(Review).where(Review.id == review_id)
        if state == ReviewState.SKIPPED:
            query = query.where(Review.state.in_(ReviewState.open()))
        else:
            query = query.where(
                Review.expert_annotation_id.is_(None)
                | (Review.expert_annotation_id < expert_annotation_id)
            )
        with self.session() as s:
            s.execute(
                query.values(
                    state=state, expert_annotation_id=expert_annotation_id, resolved_at=utcnow()
                )
            )

    def review_summary(self, dataset: str) -> dict[str, Any]:
        """Reviews of a dataset by state and by reason, and the mean per-class Dice of
        each kind of label pair (``{"annotators": {class: {"dice": x, "pairs": n}}, "review":
        ...}``; annotator vs reviewer is ``review``). Only pairs of current labels count
        (a label updated in Label Studio replaces its pairs).
        """
        states = dict.fromkeys(REVIEW_STATES, 0)
        reasons: dict[str, int] = {}
        agreement: dict[str, dict[str, dict[str, float]]] = {k: {} for k in AGREEMENT_KINDS}
        current = _newest_versions(Tier.ANNOTATOR, Tier.EXPERT)
        with self.session() as s:
            for state, why, n in s.execute(
                select(Review.state, Review.reasons, func.count())
                .where(Review.dataset == dataset, Review.state != ReviewState.SUPERSEDED)
                .group_by(Review.state, Review.reasons)
            ):
                states[state] += n
                for reason in why.split(","):
                    reasons[reason] = reasons.get(reason, 0) + n
            for kind, name, dice, n in s.execute(
                select(Agreement.kind, Agreement.class_name, func.avg(Agreement.dice), func.count())
                .where(
                    Agreement.dataset == dataset,
                    Agreement.annotation_a_id.in_(current),
                    Agreement.annotation_b_id.in_(current),
                )
                .group_by(Agreement.kind, Agreement.class_name)
                .order_by(Agreement.kind, Agreement.class_name)
            ):
                agreement[kind][name] = {"dice": float(dice), "pairs": n}
        return {"dataset": dataset, "states": states, "reasons": reasons, "agreement": agreement}
