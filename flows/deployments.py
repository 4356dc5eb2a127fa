"""The loop's deployments for one dataset: what `tomoloop serve` runs, and what
``prefect.yaml`` declares for a Prefect server with work pools.

- ``sync-<dataset>``: pull new Label Studio annotations every few minutes (the webhook's
  fallback);
- ``retrain-on-labels-<dataset>``: retrain and try to promote once enough new labels are
  in, checked on a schedule (and on webhook events, see :mod:`tomoloop.adapters.http`);
  one at a time;
- ``al-round-<dataset>``: open a new round on a cron schedule, unless one is still open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prefect.deployments import run_deployment
from prefect.deployments.runner import RunnerDeployment

from tomoloop.flows.labelstudio import sync_annotations
from tomoloop.flows.loop import al_round, retrain_on_labels


@dataclass(frozen=True)
class Schedule:
    """When the loop runs: ``round_cron`` (a new round), ``check_minutes`` (the
    new-label check), ``sync_minutes`` (polling Label Studio); ``threshold`` new labels
    start a retraining. A round's ``strategy`` and ``budget``, and its ``unit`` (``slice``,
    or ``region``: tiles of ``region`` px for ``budget_px`` labelled pixels at least
    ``min_distance`` voxels apart, as the al-round flow takes them).
    """

    round_cron: str = "0 2 * * *"
    check_minutes: int = 15
    sync_minutes: int = 5
    threshold: int = 8
    strategy: str = "bald"
    budget: int = 8
    unit: str = "slice"
    region: int = 32
    budget_px: int | None = None
    min_distance: float | None = None

    def unit_parameters(self) -> dict[str, object]:
        """The al-round flow's unit parameters: none for slices (its defaults), the region
        ones for regions."""
        if self.unit == "slice":
            return {}
        return {
            "unit": self.unit,
            "region": self.region,
            "budget_px": self.budget_px,
            "min_distance": self.min_distance,
        }


def deployment_names(dataset: str) -> dict[str, str]:
    """Deployment name per flow for a dataset."""
    return {
        "sync-annotations": f"sync-{dataset}",
        "retrain-on-labels": f"retrain-on-labels-{dataset}",
        "al-round": f"al-round-{dataset}",
    }


def deployments(dataset: str, when: Schedule = Schedule()) -> list[RunnerDeployment]:
    """The three deployments of the loop for ``dataset``."""
    names = deployment_names(dataset)
    return [
        sync_annotations.to_deployment(
            names["sync-annotations"],
            interval=when.sync_minutes * 60,
            parameters={"dataset": dataset},
            concurrency_limit=1,  # one sync at a time pushes each queued review once
            tags=["tomoloop", dataset],
        ),
        retrain_on_labels.to_deployment(
            names["retrain-on-labels"],
            interval=when.check_minutes * 60,
            parameters={"dataset": dataset, "threshold": when.threshold},
            concurrency_limit=1,
            tags=["tomoloop", dataset, "gpu"],
        ),
        al_round.to_deployment(
            names["al-round"],
            cron=when.round_cron,
            parameters={
                "dataset": dataset,
                "strategy": when.strategy,
                "budget": when.budget,
                "max_open": 1,
                **when.unit_parameters(),
            },
            tags=["tomoloop", dataset],
        ),
    ]


def start_retrain(dataset: str) -> None:
    """Ask the Prefect server to run the dataset's ``retrain-on-labels`` deployment now
    (returns at once; a worker or ``tomoloop serve`` runs it). A failure is logged, never
    raised: the scheduled check catches up.
    """
    name = f"retrain-on-labels/{deployment_names(dataset)['retrain-on-labels']}"
    try:
        run_deployment(name, timeout=0, as_subflow=False, tags=["webhook"])
    except Exception as exc:  # the webhook's answer must not depend on Prefect being up
        logging.getLogger(__name__).warning("could not start %s: %s", name, exc)
