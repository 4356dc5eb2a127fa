"""Ingest: stacks in, a registered volume with tier-auto labels and DatasetVersion v1 out.

validate the stacks → register the volume and its slices → tier-``auto`` annotations from
the label stack → COCO + masks as an artifact → freeze the dataset version. The registry
writes are one transaction and artifacts this run created are removed if it fails, so a
failed ingest leaves nothing behind; running it again on the same input changes nothing.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict

from prefect import flow, get_run_logger

from tomoloop.labels.phases import PhaseMap
from tomoloop.names import check_name
from tomoloop.services import Services, add_gold_labels, ingest_stacks
from tomoloop.stacks.opener import open_stack


@flow(name="ingest")
def ingest(
    gray: str,
    labels: str | None,
    name: str,
    phases: str,
    voxel_size: tuple[float, float, float] | None = None,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    instance_phases: tuple[str, ...] = (),
    material: str = "",
    add_to: str | None = None,
) -> dict:
    """Register a grayscale + label stack pair as volume ``name`` and dataset ``name`` v1;
    with ``add_to``, as volume ``name`` added to dataset ``add_to``'s next version instead
    (its members so far, and the new volume's slices split by ``split`` on their own).

    A stack other than the ones a dataset holds never joins it without ``add_to``. Without
    ``labels`` (only with ``add_to``) the volume's slices join the splits unlabelled.
    """
    check_name(name)
    log = get_run_logger()
    with Services.from_settings() as services:
        phase_map = PhaseMap.parse(phases)
        with (
            open_stack(gray, voxel_size) as gray_stack,
            nullcontext() if labels is None else open_stack(labels, voxel_size) as label_stack,
        ):
            result = ingest_stacks(
                services, gray_stack, label_stack, phase_map, name, split, instance_phases,
                material, add_to, log,
            )  # fmt: skip
    log.info("volume %s, dataset %s v%s", result.volume_id, result.dataset, result.version)
    return asdict(result)


@flow(name="add-gold")
def add_gold(
    dataset: str, volume: str, labels: str, splits: tuple[str, ...] = ("val", "test")
) -> dict:
    """Expert-tier labels for the ``splits`` slices of ``volume`` from a gold label stack
    (same shape as the volume), and the dataset version that holds them.

    Models are judged on these splits, so they should be the best labels there are.
    """
    with Services.from_settings() as services:
        gold = add_gold_labels(services, dataset, volume, labels, splits)
    get_run_logger().info("%d gold slices → %s v%s", gold.added, dataset, gold.version)
    return {"added": gold.added, "dataset_version": gold.dataset_version, "version": gold.version}
