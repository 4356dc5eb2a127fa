"""Active-learning rounds and their items (one slice each, with its Label Studio task)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import func, select, update

from tomoloop.db import entities
from tomoloop.db.entities import frozen, frozen_all
from tomoloop.db.models import (
    ALRound,
    Annotation,
    DatasetMember,
    ModelVersion,
    RoundItem,
)
from tomoloop.db.registry.annotations import _ranked_annotations
from tomoloop.db.registry.store import Store
from tomoloop.db.states import (
    ItemState,
    Kind,
    RoundStatus,
)
from tomoloop.labels.tiers import Tier


class RoundStore(Store):
    """Active-learning rounds."""

    def al_round(self, round_id: int) -> entities.ALRound:
        return self._get(ALRound, round_id, "active-learning round")

    def rounds(self) -> list[tuple[entities.ALRound, dict[str, int]]]:
        """Every active-learning round with its item count per state."""
        with self.session() as s:
            states: dict[int, dict[str, int]] = {}
            for round_id, state, n in s.execute(
                select(RoundItem.round_id, RoundItem.state, func.count()).group_by(
                    RoundItem.round_id, RoundItem.state
                )
            ):
                states.setdefault(round_id, {})[state] = n
            return [
                (frozen(r), states.get(r.id, {}))
                for r in s.scalars(select(ALRound).order_by(ALRound.id))
            ]

    def open_round(
        self,
        dataset: str,
        strategy: str,
        model_id: int | None,
        chosen: Sequence[tuple[int, float]],
        budget: int | None = None,
        regions: Mapping[int, tuple[int, int, int]] | None = None,
    ) -> int:
        """An open active-learning round of ``chosen`` ``(slice id, score)`` (best first,
        ranked from 1), every item pending; its id. A region round names each slice's tile
        in ``regions`` (slice id → ``(y0, x0, size)`` pixels) and its ``budget`` in pixels.
        """
        regions = regions or {}
        with self.atomic(), self.session() as s:
            round_ = ALRound(
                dataset=dataset,
                strategy=strategy,
                budget=len(chosen) if budget is None else budget,
                model_version_id=model_id,
                status=RoundStatus.OPEN,
            )
            s.add(round_)
            s.flush()
            s.add_all(
                RoundItem(
                    round_id=round_.id,
                    slice_id=slice_id,
                    score=score,
                    rank=rank,
                    **_region_columns(regions.get(slice_id)),
                )
                for rank, (slice_id, score) in enumerate(chosen, start=1)
            )
        return round_.id

    def round_items(self, round_id: int) -> list[entities.RoundItem]:
        with self.session() as s:
            return frozen_all(
                s.scalars(
                    select(RoundItem).where(RoundItem.round_id == round_id).order_by(RoundItem.rank)
                )
            )

    def set_round_tasks(
        self, round_id: int, tasks: dict[int, int], predictions: dict[int, dict] | None = None
    ) -> None:
        """Record the Label Studio task id of each pushed slice (``{slice id: task id}``) and
        the prediction pre-filled in it (``{slice id: inline mask}``, see
        :func:`tomoloop.labels.encode_class_mask`).
        """
        predictions = predictions or {}
        with self.session() as s:
            for slice_id, task_id in tasks.items():
                shown = predictions.get(slice_id)
                s.execute(
                    update(RoundItem)
                    .where(RoundItem.round_id == round_id, RoundItem.slice_id == slice_id)
                    .values(
                        ls_task_id=task_id, **({} if shown is None else {"prediction_rle": shown})
                    )
                )

    def round_item(self, round_id: int, slice_id: int) -> entities.RoundItem | None:
        """The item of a slice in a round (None: the slice is not in that round)."""
        with self.session() as s:
            found = s.scalar(
                select(RoundItem).where(
                    RoundItem.round_id == round_id, RoundItem.slice_id == slice_id
                )
            )
        return None if found is None else frozen(found)

    def region_items(self, dataset: str) -> list[entities.RoundItem]:
        """The region items of the dataset's rounds still waiting or answered (a skipped
        region frees its slice again), oldest first."""
        with self.session() as s:
            return frozen_all(
                s.scalars(
                    select(RoundItem)
                    .join(ALRound, ALRound.id == RoundItem.round_id)
                    .where(
                        ALRound.dataset == dataset,
                        RoundItem.region_size.is_not(None),
                        RoundItem.state != ItemState.SKIPPED,
                    )
                    .order_by(RoundItem.id)
                )
            )

    def round_pixels(self) -> dict[int, tuple[str, int]]:
        """Per round id, its unit (``slice``, or ``region`` when its items name tiles) and
        the pixels people labelled in it: the labelled pixels of each answered item's
        largest tier-annotator label from its task, summed."""
        per_item = (
            select(
                RoundItem.round_id,
                func.max(Annotation.labelled_px).label("px"),
            )
            .join(Annotation, Annotation.ls_task_id == RoundItem.ls_task_id)
            .where(
                Annotation.tier == int(Tier.ANNOTATOR),
                Annotation.kind == Kind.SEMANTIC.value,
                RoundItem.state == ItemState.ANNOTATED,
            )
            .group_by(RoundItem.round_id, RoundItem.id)
            .subquery()
        )
        with self.session() as s:
            pixels = dict(
                s.execute(
                    select(per_item.c.round_id, func.sum(per_item.c.px)).group_by(
                        per_item.c.round_id
                    )
                ).all()
            )
            regional = set(
                s.scalars(
                    select(RoundItem.round_id).where(RoundItem.region_size.is_not(None)).distinct()
                )
            )
            return {
                r: ("region" if r in regional else "slice", int(pixels.get(r) or 0))
                for r in s.scalars(select(ALRound.id))
            }

    def open_rounds(self, dataset: str) -> list[int]:
        """Ids of the dataset's rounds still waiting for labels, oldest first."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(ALRound.id)
                    .where(ALRound.dataset == dataset, ALRound.status == RoundStatus.OPEN)
                    .order_by(ALRound.id)
                )
            )

    def new_labels(self, dataset: str) -> int:
        """Slices of dataset ``dataset`` whose best label was made by a person (tier annotator
        or expert) and is not in the version the newest model of that name trained on (all
        such slices before any model). A label superseded by a newer one does not count.
        """
        latest = self.dataset(dataset)
        trained_on = select(ModelVersion.dataset_version_id).where(ModelVersion.name == dataset)
        trained_on = trained_on.order_by(ModelVersion.id.desc()).limit(1).scalar_subquery()
        slices = (
            select(Annotation.slice_id)
            .join(DatasetMember, DatasetMember.annotation_id == Annotation.id)
            .where(DatasetMember.dataset_version_id == latest.id)
        )
        best = _ranked_annotations().where(Annotation.slice_id.in_(slices)).subquery()
        used = select(DatasetMember.annotation_id).where(
            DatasetMember.dataset_version_id == trained_on
        )
        with self.session() as s:
            return s.scalar(
                select(func.count())
                .select_from(best)
                .join(Annotation, Annotation.id == best.c.id)
                .where(
                    best.c.rank == 1,
                    Annotation.tier >= Tier.ANNOTATOR,
                    Annotation.id.not_in(used),
                )
            )

    def lead_times(self, dataset: str) -> dict[int, float]:
        """Annotation seconds of every slice a person labelled in a round of ``dataset``."""
        with self.session() as s:
            return {
                slice_id: seconds
                for slice_id, seconds in s.execute(
                    select(RoundItem.slice_id, RoundItem.annotation_seconds)
                    .join(ALRound, ALRound.id == RoundItem.round_id)
                    .where(
                        ALRound.dataset == dataset,
                        RoundItem.state == ItemState.ANNOTATED,
                        RoundItem.annotation_seconds.is_not(None),
                    )
                )
            }

    def close_round(self, round_id: int) -> dict[str, int]:
        """Close a round whose items are all answered; its item count per state.

        A round with pending items stays open (the counts say how many).
        """
        self.al_round(round_id)
        with self.session() as s:
            counts = dict.fromkeys((state.value for state in ItemState), 0)
            for state, n in s.execute(
                select(RoundItem.state, func.count())
                .where(RoundItem.round_id == round_id)
                .group_by(RoundItem.state)
            ):
                counts[state] = n
            if counts[ItemState.PENDING] == 0:
                s.execute(
                    update(ALRound).where(ALRound.id == round_id).values(status=RoundStatus.CLOSED)
                )
        return counts

    def resolve_task(self, ls_task_id: int, state: str, seconds: float | None = None) -> None:
        """Mark the round items of a Label Studio task ``annotated`` or ``skipped`` (a skip
        never undoes an annotation another person submitted).
        """
        query = update(RoundItem).where(RoundItem.ls_task_id == ls_task_id)
        if state == ItemState.SKIPPED:
            query = query.where(RoundItem.state != ItemState.ANNOTATED)
        with self.session() as s:
            s.execute(query.values(state=state, annotation_seconds=seconds))


def _region_columns(region: tuple[int, int, int] | None) -> dict[str, int | None]:
    """A round item's region columns from ``(y0, x0, size)`` (None: a whole slice)."""
    y0, x0, size = region or (None, None, None)
    return {"region_y0": y0, "region_x0": x0, "region_size": size}
