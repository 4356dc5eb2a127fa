"""A dataset version's phases and labelled slices as training and evaluation read them, and
the unlabelled pool grouped so each stack is opened once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from tomoloop.db.entities import DatasetVersion
from tomoloop.db.registry import DatasetSlice, PoolSlice, RegistryError
from tomoloop.labels.masks import (
    decode_class_mask,
    encode_class_mask,
    encode_tiers,
    merge_with_tiers,
)
from tomoloop.labels.phases import PhaseMap
from tomoloop.labels.tiers import Tier
from tomoloop.services.context import Services
from tomoloop.training.data import LabelledSlice, SliceRef, load_slices


def dataset_phases(services: Services, dataset: DatasetVersion) -> PhaseMap:
    """The phase map shared by every volume of a dataset version."""
    return PhaseMap.parse(services.registry.dataset_phases(dataset.id))


def dataset_slices(
    services: Services, dataset: DatasetVersion, weights: dict[str, float] | None = None
) -> dict[str, list[LabelledSlice]]:
    """Every labelled slice of a dataset version, read and decoded, grouped by split
    (the slices of :func:`dataset_refs`)."""
    return load_slices(dataset_refs(services, dataset), weights)


def dataset_refs(services: Services, dataset: DatasetVersion) -> list[SliceRef]:
    """Where every labelled slice of a dataset version lives, with its mask document.

    Masks stored as artifacts are fetched and verified by sha256. A sparse label is merged
    over the lower-tier labels of its slice (:func:`merged_label`). A slice nobody labelled
    yet (:func:`nobody_labelled`) is left out: it can neither teach nor judge a network.
    """
    refs = []
    for member in services.registry.dataset_slices(dataset.id):
        if nobody_labelled(member):
            continue
        mask = mask_document(
            services, member.annotation_id, member.mask_rle, member.mask_uri, member.mask_sha256
        )
        if "labelled" in mask:
            mask = merged_label(services, member.annotation_id, member.tier, mask)
        refs.append(
            SliceRef(
                member.volume_path,
                member.axis,
                member.index,
                mask,
                member.tier,
                member.split,
                member.annotation_id,
                member.instances_rle,
            )
        )
    return refs


def nobody_labelled(member: DatasetSlice) -> bool:
    """Whether a dataset slice's best label is the empty tier-auto one of a volume added
    without labels (0 labelled pixels, and no lower tier to merge it over)."""
    return member.labelled_px == 0 and member.tier == Tier.AUTO


def mask_document(
    services: Services,
    annotation_id: int,
    mask_rle: dict[str, Any] | None,
    mask_uri: str | None,
    mask_sha256: str | None,
) -> dict[str, Any]:
    """A semantic label's mask document: inline, or fetched and verified by sha256."""
    if mask_rle is not None:
        return mask_rle
    if mask_uri is None or mask_sha256 is None:
        raise RegistryError(f"annotation {annotation_id} has no mask")
    document: dict[str, Any] = json.loads(services.store.get_bytes(mask_uri, mask_sha256))
    return document


def merged_label(
    services: Services, annotation_id: int, tier: int, sparse: dict[str, Any]
) -> dict[str, Any]:
    """A sparse label (inline document) merged by tier over the lower-tier labels of its
    slice (:meth:`Registry.lower_labels`): its classes where it is labelled, theirs
    elsewhere; pixels none labels stay unlabelled. The pixels taken from lower tiers are
    listed under ``"tiers"`` so training weighs them by their own tier."""
    lower = [
        (
            a.tier,
            decode_class_mask(mask_document(services, a.id, a.mask_rle, a.mask_uri, a.mask_sha256)),
        )
        for a in services.registry.lower_labels(annotation_id)
    ]
    mask, tiers = merge_with_tiers([*lower, (tier, decode_class_mask(sparse))])
    document = encode_class_mask(mask)
    others = encode_tiers(tiers, tier)
    return document | {"tiers": others} if others else document


def slice_volumes(services: Services, dataset: DatasetVersion) -> dict[int | None, str]:
    """Annotation id → the name of its slice's volume, for every slice of a version
    (keyed as :attr:`LabelledSlice.annotation_id` is typed)."""
    names = {v.id: v.name for v in services.registry.dataset_volumes(dataset.id)}
    return {
        m.annotation_id: names[m.volume_id] for m in services.registry.dataset_slices(dataset.id)
    }


def pool_groups(pool: list[PoolSlice]) -> dict[tuple[str, str], dict[int, int]]:
    """Pool slices grouped by (volume path, axis): index → slice id, so each stack is
    opened once.
    """
    groups: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for p in pool:
        groups[(p.volume_path, p.axis)][p.index] = p.slice_id
    return groups
