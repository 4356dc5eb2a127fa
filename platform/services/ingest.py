"""Ingest as steps: stacks in, a registered volume with tier-auto labels and a dataset
version out; gold labels for the splits models are judged on.

check the stacks and the target dataset → COCO + masks as an artifact → volume, slices,
tier-``auto`` annotations and the frozen dataset version in one transaction (the artifact
this run stored is removed if that fails).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tomoloop.adapters.artifacts import Artifact, ArtifactStore
from tomoloop.coco.convert import CocoOptions, batches, convert_stack
from tomoloop.db.entities import DatasetVersion, Volume
from tomoloop.db.registry import NewAnnotation, Registry, RegistryError
from tomoloop.labels.masks import stack_class_counts, stack_class_masks, unlabelled_mask
from tomoloop.labels.phases import PhaseMap
from tomoloop.labels.splits import balanced_seed, check_split_fills, split_slices
from tomoloop.labels.tiers import Tier
from tomoloop.scratch import scratch_dir
from tomoloop.services.context import Log, Services
from tomoloop.stacks.archive import zip_folder
from tomoloop.stacks.checks import check_same_shape, check_volume_shape
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.stack import Stack

_BATCH = 64  # slices' auto labels per insert: memory flat in the volume's depth
UNLABELLED = "unlabelled"  # the source of the empty labels of a volume added without labels


@dataclass(frozen=True)
class IngestResult:
    volume_id: int
    volume: str  # the registered name: a stack registered before keeps its first name
    dataset_version_id: int
    dataset: str
    version: int
    slices: int
    annotations_added: int  # labels added; 0 without labels (the slices' empty ones do not count)
    coco_artifact: str | None  # None: added without labels


@dataclass(frozen=True)
class GoldAdded:
    """Gold labels added, and the dataset version that holds them."""

    added: int
    dataset_version: int
    version: int


def ingest_stacks(
    services: Services,
    gray: Stack,
    labels: Stack | None,
    phases: PhaseMap,
    name: str,
    split: tuple[float, float, float],
    instance_phases: tuple[str, ...],
    material: str,
    add_to: str | None,
    log: Log,
) -> IngestResult:
    """Check the stacks and the target dataset, export COCO + masks, register everything
    (one transaction); the COCO artifact this run stored is removed if registering fails.

    The slices are split as :func:`volume_parts` says; the COCO export and the registered
    dataset version share that split.

    Without ``labels`` (a scan nobody labelled yet, only with ``add_to``) nothing is
    exported: each slice joins its split holding an empty label (:func:`unlabelled_mask`).
    """
    check_unlabelled_target(labels, add_to)
    if labels is not None:
        check_same_shape(gray, labels)
    check_target(services.registry, gray, phases, name, add_to)
    check_split_fills(gray.shape[0], split)
    parts = volume_parts(services.registry, gray, labels, phases, split, log)
    if labels is None:
        with services.registry.atomic():
            return register(services.registry, gray, None, phases, name, parts, material, None,
                            add_to)  # fmt: skip
    log.info("exporting COCO + masks of %s", labels.path.name)
    home = services.settings.home
    coco = export_coco(gray, labels, phases, parts, instance_phases, services.store, home)
    try:
        with services.registry.atomic():
            return register(
                services.registry, gray, labels, phases, name, parts, material, coco, add_to
            )
    except BaseException:
        if coco.new:  # this run stored it, and nothing refers to it
            services.store.remove(coco.key)
        raise


def volume_parts(
    registry: Registry,
    gray: Stack,
    labels: Stack | None,
    phases: PhaseMap,
    split: tuple[float, float, float],
    log: Log,
) -> dict[str, list[int]]:
    """The z indices of ``gray``'s slices in each split: those its slices have when the
    volume is registered (a slice never changes split, so no test slice of one version
    trains the next), else ``split`` dealt by the first block shuffle that leaves no split
    short of a phase ``labels`` hold (:func:`balanced_seed`: a phase found only at the
    ends of the stack still reaches val and test; shuffle 0 without labels).

    Raises:
        StackValidationError: a slice of ``labels`` holds a value ``phases`` does not declare.
    """
    known = _registered_as(registry, gray)
    held = None if known is None else registry.volume_split(known.id)
    if held is not None:
        return held
    seed = 0 if labels is None else balanced_seed(stack_class_counts(labels, phases), split)
    log.info("splitting %s's slices by block shuffle %d", gray.path.name, seed)
    return split_slices(gray.shape[0], split, seed=seed)


def check_unlabelled_target(labels: Stack | None, add_to: str | None) -> None:
    """Refuse a volume without labels that would make a dataset of its own.

    Raises:
        RegistryError: naming ``--add-to``.
    """
    if labels is None and add_to is None:
        raise RegistryError(
            "a volume without labels joins an existing dataset: give --add-to DATASET "
            "(or --labels LABELS to make a dataset of its own)"
        )


def check_target(
    registry: Registry, gray: Stack, phases: PhaseMap, name: str, add_to: str | None
) -> None:
    """Refuse, before anything is stored, a stack that would change which volumes a
    dataset holds without ``--add-to``, an ``--add-to`` dataset that does not exist or
    has other phases, and with ``--add-to`` a stack registered under another volume name.
    (Without ``--add-to`` a registered stack may make a dataset of another name: it joins
    as the volume it is, named in the result.)

    Raises:
        RegistryError: naming the explicit command; or the volume registered from the same
            file when that file's content has changed (volumes are read from their files).
    """
    _check_same_file(registry, gray)
    target = add_to or name
    try:
        latest = registry.dataset(target)
    except RegistryError:
        if add_to is None:
            return
        raise
    held = registry.dataset_volumes(latest.id)
    if add_to is not None:
        if registry.dataset_phases(latest.id) != str(phases):
            raise RegistryError(
                f"--phases {phases} differ from {registry.dataset_phases(latest.id)}, the "
                f"phases of dataset {add_to!r}: a dataset's volumes share one phase map"
            )
        known = _registered_as(registry, gray)
        if known is not None and known.name != name:
            raise RegistryError(
                f"{gray.path.name} is registered as volume {known.name!r}, not {name!r}: "
                f"give --name {known.name} (adding it again with --labels replaces its labels)"
            )
        return
    if gray.content_sha256() not in {v.sha256 for v in held}:
        raise RegistryError(
            f"dataset {name!r} holds volume {', '.join(repr(v.name) for v in held)}, not "
            f"{gray.path.name}: add it explicitly with `tomoloop ingest {gray.path.name} "
            f"--labels LABELS --name NEW-VOLUME --add-to {name}`, or give another --name"
        )


def _check_same_file(registry: Registry, gray: Stack) -> None:
    """Refuse a stack whose source a registered volume was read from with other content:
    tomoloop reads a volume's slices from its file whenever it trains, scores or exports,
    so a file replaced in place would turn the old volume into the new scan.

    Raises:
        RegistryError: naming the volume and what to do.
    """
    sha = gray.content_sha256()
    old = next((v for v in registry.volumes() if v.path == gray.source and v.sha256 != sha), None)
    if old is not None:
        raise RegistryError(
            f"{gray.path.name} is the file volume {old.name!r} was registered from, and its "
            f"content has changed since: volumes are read from their files, so put the new "
            f"scan in a file of its own and {old.name!r}'s scan back in this one"
        )


def _registered_as(registry: Registry, gray: Stack) -> Volume | None:
    """The registered volume with ``gray``'s content, if any."""
    sha = gray.content_sha256()
    return next((v for v in registry.volumes() if v.sha256 == sha), None)


def export_coco(
    gray: Stack,
    labels: Stack,
    phases: PhaseMap,
    parts: Mapping[str, Sequence[int]],
    instance_phases: tuple[str, ...],
    store: ArtifactStore,
    home: Path,
) -> Artifact:
    """The COCO folder (annotations, 8-bit images, class masks) as one zip artifact, made in
    a scratch folder under ``home``; the slices split as ``parts`` (``{split: [z index]}``).
    """
    with scratch_dir(home, "tomoloop-ingest") as tmp:
        options = CocoOptions(
            instance_phases=tuple(phases.value(p) for p in instance_phases),
            members=parts,
            particle_ids=True,
        )
        convert_stack(labels, Path(tmp) / "coco", phases, options, gray=gray)
        return store.put_file(zip_folder(Path(tmp) / "coco", Path(tmp) / "coco.zip"))


def register(
    registry: Registry,
    gray: Stack,
    labels: Stack | None,
    phases: PhaseMap,
    name: str,
    parts: Mapping[str, Sequence[int]],
    material: str,
    coco: Artifact | None,
    add_to: str | None = None,
) -> IngestResult:
    """Volume, slices, tier-auto annotations and the frozen dataset version (one
    transaction), the slices split as ``parts`` (``{split: [z index]}``): dataset ``name``
    v1 (or its next version when the labels changed), or with ``add_to`` that dataset's
    next version with this volume added (a volume it holds already keeps its slices'
    splits, each slice with its best label now). Without
    ``labels`` every slice's tier-auto annotation is empty (:func:`unlabelled_mask`,
    source ``unlabelled``) — unless the volume is registered already: its slices keep the
    labels they have (an empty label would outrank them, being newer). Without ``add_to``,
    re-ingesting a volume of a dataset of many volumes refreshes that dataset (every
    volume stays, as with ``add_to``)."""
    known = _registered_as(registry, gray)
    volume_id = registry.register_volume(
        name,
        gray.source,  # absolute (flows run from anywhere), with its dataset / raw layout
        gray.content_sha256(),
        gray.shape,
        str(gray.dtype),
        str(phases),
        gray.voxel_size,
        material=material,
    )
    slice_ids = registry.register_slices(volume_id, "z", range(gray.shape[0]))
    source = UNLABELLED if labels is None else f"auto:{labels.content_sha256()}"
    if labels is not None:
        found: Iterator[tuple[int, dict]] = stack_class_masks(labels, phases)
    else:
        found = iter(()) if known is not None else empty_masks(gray)
    masks = (NewAnnotation(slice_ids[i], Tier.AUTO, source, mask_rle=mask) for i, mask in found)
    added = sum(registry.add_annotations(batch) for batch in batches(masks, _BATCH))
    by_slice = {s: a for s, (a, _) in registry.best_labels(volume_id).items()}
    members: dict[str, Sequence[int]] = {
        part: [by_slice[slice_ids[i]] for i in indices] for part, indices in parts.items()
    }
    artifacts = {} if coco is None else {"coco": {"uri": coco.key, "sha256": coco.sha256}}
    joined = add_to
    if joined is None and _holds_others(registry, name, volume_id):
        joined = name  # re-ingested into a dataset of many volumes: the others stay
    if joined is None:
        dataset = registry.freeze_dataset(name, members, artifacts)
    else:
        previous = registry.dataset(joined)
        key = "coco" if add_to is None else f"coco:{name}"
        artifacts = {**previous.artifacts, **({} if coco is None else {key: artifacts["coco"]})}
        if volume_id in {v.id for v in registry.dataset_volumes(previous.id)}:
            # added again (new labels): its slices keep their splits, now with their best label
            dataset = registry.refresh_dataset(joined, artifacts)
        else:
            members = merge_members(registry.dataset_members(previous.id), members)
            dataset = registry.freeze_dataset(joined, members, artifacts)
    return IngestResult(
        volume_id, name if known is None else known.name, dataset.id, dataset.name,
        dataset.version, len(slice_ids),
        0 if labels is None else added, None if coco is None else coco.key,
    )  # fmt: skip


def _holds_others(registry: Registry, name: str, volume_id: int) -> bool:
    """Whether dataset ``name`` exists and holds a volume besides ``volume_id``."""
    try:
        latest = registry.dataset(name)
    except RegistryError:
        return False
    return any(v.id != volume_id for v in registry.dataset_volumes(latest.id))


def empty_masks(gray: Stack) -> Iterator[tuple[int, dict]]:
    """``(index, empty label)`` of every z slice of ``gray`` (:func:`unlabelled_mask`)."""
    _, h, w = gray.shape
    empty = unlabelled_mask(h, w)
    return ((i, empty) for i in range(gray.shape[0]))


def merge_members(
    previous: Mapping[str, Sequence[int]], added: Mapping[str, Sequence[int]]
) -> dict[str, Sequence[int]]:
    """A version's members (``{split: [annotation ids]}``) with ``added`` ones joined to
    their splits; an annotation the version holds already keeps its split."""
    held = {a for ids in previous.values() for a in ids}
    return {
        split: [*previous.get(split, []), *(a for a in added.get(split, []) if a not in held)]
        for split in ("train", "val", "test")
    }


def _check_gold_target(
    registry: Registry,
    version: DatasetVersion,
    volume: Volume,
    splits: tuple[str, ...],
    found_slices: bool,
) -> None:
    """Refuse gold labels that could label nothing: a volume the dataset version does not
    hold, or splits without a slice of it.

    Raises:
        RegistryError: naming the volumes the version holds, or its splits' slices.
    """
    held = registry.dataset_volumes(version.id)
    where = f"dataset {version.name}@{version.version}"
    if volume.id not in {v.id for v in held}:
        raise RegistryError(
            f"volume {volume.name!r} is not in {where}, which holds "
            f"{', '.join(repr(v.name) for v in held)}: give one of those as --volume"
        )
    if not found_slices:
        raise RegistryError(
            f"{where} has no {' or '.join(splits)} slice of volume {volume.name!r} (its "
            f"split left none there): give --splits of the splits it has"
        )


def add_gold_labels(
    services: Services, dataset: str, volume: str, labels: str, splits: tuple[str, ...]
) -> GoldAdded:
    """Expert-tier labels for the ``splits`` slices of ``volume`` from a gold label stack
    (same shape as the volume), and the dataset's next version holding them (one
    transaction)."""
    registry = services.registry
    version = registry.dataset(dataset)
    found = registry.volume_named(volume)
    phases = PhaseMap.parse(found.phases)
    wanted = {
        p.index: p.slice_id
        for split in splits
        for p in registry.pool(version.id, split)
        if p.volume_id == found.id and p.axis == "z"
    }
    _check_gold_target(registry, version, found, splits, bool(wanted))
    with open_stack(labels) as stack:
        shape = (found.shape_z, found.shape_y, found.shape_x)
        check_volume_shape(stack, shape, volume, "gold labels")
        source = f"gold:{stack.content_sha256()}"
        annotations = [
            NewAnnotation(wanted[i], Tier.EXPERT, source, mask_rle=mask)
            for i, mask in stack_class_masks(stack, phases)
            if i in wanted
        ]
    with registry.atomic():
        added = registry.add_annotations(annotations)
        new = registry.refresh_dataset(dataset)
    return GoldAdded(added, new.id, new.version)
