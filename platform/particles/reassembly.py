"""3D particles from 2D instance masks (Daemi et al. 2022, §4 "Label Generation and
Mask R-CNN Training"; docs/references.md).

The volume is segmented slice by slice along z, y and x; the three particle masks are
fused by vote, cleaned by erosion, hole filling and dilation, and split into particles by
a distance-transform watershed, labelled with cc3d. Each particle is measured (voxels,
volume and surface in µm, equivalent radius, box, border contact); slice-like artefacts
are found as Mahalanobis outliers and partial particles by the > 20 % boundary rule.

Arrays are (Z, Y, X); voxel sizes are (z, y, x) in µm.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cc3d
import numpy as np
from scipy import ndimage
from scipy.stats import chi2
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from tomoloop.coco.convert import prepare_out, publish
from tomoloop.errors import TomoloopError
from tomoloop.metrics.structure import interface_area
from tomoloop.outputs import writing
from tomoloop.particles.flaws import is_flawed
from tomoloop.report.plots import plot_size_distribution
from tomoloop.stacks.stack import VoxelSize
from tomoloop.stacks.tiff import write_stack


class VolumeError(TomoloopError):
    """3D particles cannot be made or measured as asked."""


@dataclass(frozen=True)
class ReassemblyOptions:
    """How 2D particle masks become 3D particles.

    Attributes:
        votes: how many of the slicing directions must call a voxel particle.
        erosion: radius in voxels of the erosion and of the dilation after hole filling
            (Daemi et al. 2022, §4: smooths slice artefacts; 0 switches both off).
        fill_holes: fill enclosed holes of every particle (flaws count as particle).
        watershed: split touching particles by a distance-transform watershed; otherwise
            26-connected components are the particles.
        seed_depth: a watershed seed is a distance-transform maximum at least this many
            voxels above the saddle to its neighbour (h-maxima), so a neck shallower than
            this does not split a particle.
        min_voxels: particles smaller than this are dropped (resolution-limit specks).
    """

    votes: int = 2
    erosion: int = 1
    fill_holes: bool = True
    watershed: bool = True
    seed_depth: float = 1.0
    min_voxels: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.votes <= 3:
            raise VolumeError(f"votes {self.votes}: 1, 2 or 3 of the slicing directions")
        if self.erosion < 0 or self.min_voxels < 0 or self.seed_depth <= 0:
            raise VolumeError("erosion and min_voxels must be ≥ 0 and seed_depth > 0")

    @classmethod
    def from_options(cls, options: dict) -> ReassemblyOptions:
        """Options given as KEY=VALUE pairs; an unknown key is named."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise VolumeError(
                f"unknown reassembly option {unknown[0]!r}: use "
                f"{', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**options)


def fuse(masks: Sequence[np.ndarray], votes: int) -> np.ndarray:
    """(Z, Y, X) bool: voxels that at least ``votes`` of the given (Z, Y, X) bool particle
    masks (one per slicing direction) call particle.
    """
    if not 1 <= votes <= len(masks):
        raise ValueError(f"votes {votes}: between 1 and the {len(masks)} masks")
    total = np.zeros(masks[0].shape, np.uint8)
    for mask in masks:
        total += mask.astype(np.uint8)
    return total >= votes


def clean(mask: np.ndarray, erosion: int, fill_holes: bool) -> np.ndarray:
    """Erosion, hole filling, dilation (Daemi et al. 2022, §4) of a (Z, Y, X) bool mask; the
    dilation adds nothing outside the mask and its filled holes, so only specks and thin protrusions
    go.
    """
    out = mask
    ball = ndimage.generate_binary_structure(3, 1)
    if erosion:
        out = ndimage.binary_erosion(out, ball, iterations=erosion)
    if fill_holes:
        out = ndimage.binary_fill_holes(out)
    if erosion:
        out = ndimage.binary_dilation(out, ball, iterations=erosion) & (mask | out)
    return out


def separate(mask: np.ndarray, watershed_split: bool, seed_depth: float) -> np.ndarray:
    """(Z, Y, X) uint32 particle labels 1..n of a bool mask (0 background).

    With ``watershed_split`` touching particles are split along the watershed of the
    negated Euclidean distance transform, seeded at its h-maxima of depth ``seed_depth``.
    """
    components = cc3d.connected_components(mask, connectivity=26)
    if not watershed_split or not mask.any():
        return components.astype(np.uint32)
    distance = ndimage.distance_transform_edt(mask)
    seeds = cc3d.connected_components(h_maxima(distance, seed_depth).astype(bool), connectivity=26)
    labels = watershed(-distance, seeds, mask=mask)
    unseeded = mask & (labels == 0)  # components without a seed keep their own label
    if unseeded.any():
        extra = cc3d.connected_components(unseeded, connectivity=26)
        labels = np.where(unseeded, extra + labels.max(), labels)
    return cc3d.connected_components(labels, connectivity=26).astype(np.uint32)


def drop_small(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Labels with particles under ``min_voxels`` removed and the rest renumbered 1..m."""
    counts = np.bincount(labels.ravel())
    small = np.flatnonzero(counts < min_voxels)
    small = small[small > 0]
    if small.size == 0:
        return labels
    kept = np.where(np.isin(labels, small), 0, labels)
    return cc3d.connected_components(kept, connectivity=26).astype(np.uint32)


def reassemble(
    masks: Sequence[np.ndarray], options: ReassemblyOptions = ReassemblyOptions()
) -> np.ndarray:
    """(Z, Y, X) uint32 particle labels from per-direction (Z, Y, X) bool particle masks
    (fewer masks than ``options.votes``: every mask must agree).
    """
    votes = min(options.votes, len(masks))  # one direction only: its mask decides
    fused = clean(fuse(masks, votes), options.erosion, options.fill_holes)
    return drop_small(separate(fused, options.watershed, options.seed_depth), options.min_voxels)


@dataclass(frozen=True)
class Particle:
    """One 3D particle. Lengths in µm, box in voxels [z0, y0, x0, z1, y1, x1) (end
    exclusive); ``boundary_fraction``: the share of its surface voxels on the volume's
    outer faces; ``face_coverage``: the largest share (0–1) of a slice of its box lying on
    one of the volume's outer faces that the particle covers (0 when it touches none).
    """

    id: int
    voxels: int
    volume_um3: float
    equivalent_radius_um: float
    surface_area_um2: float
    z0: int
    y0: int
    x0: int
    z1: int
    y1: int
    x1: int
    touches_border: bool
    boundary_fraction: float
    face_coverage: float = 0.0

    def as_row(self) -> dict:
        return asdict(self)


def particle_table(labels: np.ndarray, voxel_size_um: Sequence[float]) -> list[Particle]:
    """Every particle of a (Z, Y, X) label volume, measured; ordered by id."""
    voxel_um3 = float(np.prod(voxel_size_um))
    boxes = ndimage.find_objects(labels)
    shape = labels.shape
    particles = []
    for index, box in enumerate(boxes):
        if box is None:
            continue
        pid = index + 1
        own = labels[box] == pid
        voxels = int(own.sum())
        volume = voxels * voxel_um3
        on_faces = _face_voxels(own, box, shape)
        surface_voxels = int((own & ~ndimage.binary_erosion(own, border_value=0)).sum())
        particles.append(
            Particle(
                id=pid,
                voxels=voxels,
                volume_um3=volume,
                equivalent_radius_um=(3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0),
                surface_area_um2=interface_area(own, voxel_size_um, closed=True),
                z0=box[0].start,
                y0=box[1].start,
                x0=box[2].start,
                z1=box[0].stop,
                y1=box[1].stop,
                x1=box[2].stop,
                touches_border=on_faces > 0,
                boundary_fraction=on_faces / max(surface_voxels, 1),
                face_coverage=_face_coverage(own, box, shape),
            )
        )
    return particles


def _face_voxels(own: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> int:
    """How many of a particle's voxels lie on the volume's outer faces."""
    on_face = np.zeros(own.shape, bool)
    for axis, (part, size) in enumerate(zip(box, shape, strict=True)):
        index: list[slice | int] = [slice(None)] * 3
        if part.start == 0:
            index[axis] = 0
            on_face[tuple(index)] = True
        if part.stop == size:
            index[axis] = -1
            on_face[tuple(index)] = True
    return int((own & on_face).sum())


def _face_coverage(own: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> float:
    """The largest share of a box slice on one of the volume's outer faces that the
    particle (``own``, its box's bool mask) covers; 0 when its box touches no face."""
    shares = [0.0]
    for axis, (part, size) in enumerate(zip(box, shape, strict=True)):
        for end, touches in ((0, part.start == 0), (-1, part.stop == size)):
            if touches:
                face = np.take(own, end, axis=axis)
                shares.append(float(face.mean()))
    return max(shares)


# Daemi et al. 2022, §4: "> 20 % of the surface of a slice covered by boundary pixels" →
# partial particle
PARTIAL_FRACTION = 0.2
PARTIAL_RULES = ("slice", "surface")


def partial_particles(
    particles: Sequence[Particle], threshold: float = PARTIAL_FRACTION, rule: str = "slice"
) -> set[int]:
    """Ids of particles cut by the volume's edge. ``rule`` ``slice`` (Daemi et al. 2022,
    §4): more than ``threshold`` of a slice of the particle's box on an outer face of the
    volume is covered by the particle (:attr:`Particle.face_coverage`); ``surface``: more
    than ``threshold`` of its surface voxels lie on the outer faces
    (:attr:`Particle.boundary_fraction`).

    Raises:
        VolumeError: an unknown rule.
    """
    if rule not in PARTIAL_RULES:
        raise VolumeError(f"partial-particle rule {rule!r}: one of {', '.join(PARTIAL_RULES)}")
    share = "face_coverage" if rule == "slice" else "boundary_fraction"
    return {p.id for p in particles if getattr(p, share) > threshold}


def artefact_features(particles: Sequence[Particle]) -> np.ndarray:
    """(n, 3) per particle: log voxels, thinnest / thickest box side, and box fill
    (voxels / box volume). Slice-like artefacts are thin and flat: far out on the second.
    """
    rows = []
    for p in particles:
        sides = np.array([p.z1 - p.z0, p.y1 - p.y0, p.x1 - p.x0], np.float64)
        rows.append([math.log(p.voxels), sides.min() / sides.max(), p.voxels / sides.prod()])
    return np.array(rows, np.float64).reshape(-1, 3)


def mahalanobis_outliers(features: np.ndarray, quantile: float = 0.975) -> np.ndarray:
    """(n,) bool: rows whose squared Mahalanobis distance exceeds the chi-square
    ``quantile`` (degrees of freedom = columns). Mean and covariance are re-estimated on
    the inliers until the set is stable, so outliers do not hide each other. Fewer rows
    than 3 × columns: nothing is an outlier (the covariance is not estimable).
    """
    n, k = features.shape
    outliers = np.zeros(n, bool)
    if n < 3 * k:
        return outliers
    limit = chi2.ppf(quantile, k)
    for _ in range(20):
        inliers = features[~outliers]
        centred = features - inliers.mean(axis=0)
        precision = np.linalg.pinv(np.cov(inliers, rowvar=False))
        distance2 = np.einsum("ij,jk,ik->i", centred, precision, centred)
        found = distance2 > limit
        if np.array_equal(found, outliers) or (~found).sum() < 3 * k:
            break
        outliers = found
    return outliers


def slice_artefacts(particles: Sequence[Particle], quantile: float = 0.975) -> set[int]:
    """Ids of particles that are Mahalanobis outliers (Daemi et al. 2022, §4) and thinner than
    typical: slice-like artefacts of 2D detection, not merely the largest particles.
    """
    features = artefact_features(particles)
    if not len(features):
        return set()
    flags = mahalanobis_outliers(features, quantile)
    typical = np.median(features[:, 1])
    return {
        p.id for p, f, row in zip(particles, flags, features, strict=True) if f and row[1] < typical
    }


def size_distribution(
    particles: Sequence[Particle], bin_um: float
) -> tuple[np.ndarray, np.ndarray]:
    """Particle-size distribution: counts of equivalent radii in bins of ``bin_um`` µm;
    ``(counts (b,), edges (b + 1,))`` from 0 to past the largest radius.
    """
    if bin_um <= 0:
        raise VolumeError(f"bin {bin_um} µm: the size-distribution bin must be > 0")
    radii = np.array([p.equivalent_radius_um for p in particles], np.float64)
    top = bin_um * (math.floor(radii.max() / bin_um) + 1) if radii.size else bin_um
    edges = np.arange(0.0, top + bin_um / 2, bin_um)
    counts, _ = np.histogram(radii, edges)
    return counts, edges


@dataclass(frozen=True)
class ParticleAnalysis:
    """The particles of a label volume with Daemi et al. 2022's exclusions (§4): ``kept`` are
    neither slice artefacts nor partial.
    """

    particles: list[Particle]
    artefacts: set[int]
    partial: set[int]

    @property
    def kept(self) -> list[Particle]:
        dropped = self.artefacts | self.partial
        return [p for p in self.particles if p.id not in dropped]


def analyse(
    labels: np.ndarray, voxel_size_um: Sequence[float], partial_rule: str = "slice"
) -> ParticleAnalysis:
    """Measure every particle, then flag slice artefacts and partial particles (by
    ``partial_rule``, :func:`partial_particles`)."""
    particles = particle_table(labels, voxel_size_um)
    partial = partial_particles(particles, rule=partial_rule)
    return ParticleAnalysis(particles, slice_artefacts(particles), partial)


def particle_rows(
    analysis: ParticleAnalysis, scores: dict[int, np.ndarray] | None = None
) -> list[dict]:
    """One row per particle: its measures, its exclusion flags and, for classified
    particles, the mean flaw score and verdict (:func:`tomoloop.particles.is_flawed`).
    """
    scores = scores or {}
    return [
        {
            **p.as_row(),
            "slice_artefact": p.id in analysis.artefacts,
            "partial": p.id in analysis.partial,
            "flaw_score": float(np.mean(scores[p.id])) if p.id in scores else None,
            "flawed": is_flawed(scores[p.id]) if p.id in scores else None,
        }
        for p in analysis.particles
    ]


def particle_summary(
    analysis: ParticleAnalysis, scores: dict[int, np.ndarray] | None, bin_um: float
) -> dict:
    """Counts (Daemi et al. 2022, Table 1: particles, flawed, % flawed of the kept ones), mean
    equivalent radius (µm) and the size distribution of the kept particles. Flaw figures
    are None when the particles were not classified (``scores`` None).
    """
    kept = analysis.kept
    counts, edges = size_distribution(kept, bin_um)
    flawed = None if scores is None else sum(is_flawed(s) for s in scores.values())
    radii = [p.equivalent_radius_um for p in kept]
    return {
        "particles": len(analysis.particles),
        "kept": len(kept),
        "slice_artefacts": len(analysis.artefacts),
        "partial": len(analysis.partial),
        "flawed": flawed,
        "percent_flawed": 100.0 * flawed / len(kept) if flawed is not None and kept else None,
        "mean_equivalent_radius_um": float(np.mean(radii)) if radii else None,
        "size_distribution": {"edges_um": edges.tolist(), "counts": counts.tolist()},
    }


def kept_labels(labels: np.ndarray, analysis: ParticleAnalysis) -> np.ndarray:
    """(Z, Y, X) uint32 labels of the kept particles only (ids unchanged)."""
    ids = [p.id for p in analysis.kept]
    return np.where(np.isin(labels, ids), labels, 0).astype(np.uint32)


def phase_size_distribution(
    mask: np.ndarray, voxel_size_um: Sequence[float], bin_um: float, seed_depth: float = 1.0
) -> dict:
    """Particle-size distribution of a (Z, Y, X) bool phase: its particles split by the
    watershed (:func:`separate`), partial particles left out (Daemi et al. 2022, §4: the 20 % rule);
    ``{"particles", "mean_equivalent_radius_um", "edges_um", "counts"}``.
    """
    labels = separate(mask, True, seed_depth)
    particles = particle_table(labels, voxel_size_um)
    partial = partial_particles(particles)
    whole = [p for p in particles if p.id not in partial]
    counts, edges = size_distribution(whole, bin_um)
    radii = [p.equivalent_radius_um for p in whole]
    return {
        "particles": len(whole),
        "mean_equivalent_radius_um": float(np.mean(radii)) if radii else None,
        "edges_um": edges.tolist(),
        "counts": counts.tolist(),
    }


def write_particle_report(
    out_dir: Path,
    labels: np.ndarray,
    voxel_size_um: VoxelSize,
    rows: Sequence[dict],
    summary: dict,
    flaws: np.ndarray | None,
    overwrite: bool = False,
) -> Path:
    """Write ``labels.tif``, ``particles.csv``, ``psd.png``, ``summary.json`` and, when
    given, ``flaws.tif`` (3-phase) into a new ``out_dir``: all of them or, on any error,
    none (temp folder renamed into place).
    """
    with writing("--out", out_dir):
        tmp = prepare_out(out_dir, overwrite)
        try:
            write_stack(tmp / "labels.tif", labels, voxel_size_um)
            with (tmp / "particles.csv").open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["id"])
                writer.writeheader()
                writer.writerows(rows)
            distribution = summary["size_distribution"]
            plot_size_distribution(
                np.array(distribution["counts"]),
                np.array(distribution["edges_um"]),
                f"{summary['kept']} particles",
                tmp / "psd.png",
            )
            if flaws is not None:
                write_stack(tmp / "flaws.tif", flaws, voxel_size_um)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
            publish(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir
