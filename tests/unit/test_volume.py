"""3D particles from 2D masks: fusion, clean-up, watershed, measurement, the artefact
and partial-particle rules of Daemi et al. 2022, §4 (docs/references.md), the size distribution.
"""

from __future__ import annotations

import math

import cc3d
import numpy as np
import porespy as ps
import pytest

from tomoloop.particles.reassembly import (
    Particle,
    ReassemblyOptions,
    VolumeError,
    clean,
    fuse,
    mahalanobis_outliers,
    partial_particles,
    particle_table,
    reassemble,
    separate,
    size_distribution,
    slice_artefacts,
)


def ball(shape, centre, radius) -> np.ndarray:
    z, y, x = np.ogrid[tuple(slice(0, s) for s in shape)]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Both label volumes split the same voxels into the same particles (ids may differ)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_porespy_spheres_are_recovered_exactly_from_perfect_2d_masks(seed):
    spheres = ps.generators.random_spheres(
        shape=[40, 48, 48], r=5, clearance=2, phi=0.15, seed=seed, edges="contained"
    ).astype(bool)
    truth = cc3d.connected_components(spheres, connectivity=26)
    assert truth.max() >= 10
    found = reassemble([spheres, spheres, spheres])  # every direction sliced perfectly
    assert found.max() == truth.max()
    assert same_partition(truth, found)


def test_touching_particles_are_split_by_the_watershed_only():
    both = ball((24, 24, 40), (12, 12, 12), 7) | ball((24, 24, 40), (12, 12, 24), 7)
    assert separate(both, watershed_split=False, seed_depth=1.0).max() == 1
    split = separate(both, watershed_split=True, seed_depth=1.0)
    assert split.max() == 2
    left, right = split[12, 12, 8], split[12, 12, 28]
    assert left != right and left and right


def test_votes_decide_each_voxel():
    a, b, c = (np.zeros((2, 2, 2), bool) for _ in range(3))
    a[0, 0, 0] = b[0, 0, 0] = True  # two votes
    c[1, 1, 1] = True  # one vote
    fused = fuse([a, b, c], votes=2)
    assert fused[0, 0, 0] and fused.sum() == 1
    assert fuse([a, b, c], votes=1).sum() == 2


def test_clean_up_drops_specks_and_fills_flaws_but_keeps_the_particle():
    particle = ball((30, 30, 30), (15, 15, 15), 8)
    cracked = particle & ~ball((30, 30, 30), (15, 15, 15), 3)  # an internal flaw
    cracked[2, 2, 2] = True  # a one-voxel speck
    cleaned = clean(cracked, erosion=1, fill_holes=True)
    assert not cleaned[2, 2, 2]
    assert cleaned[15, 15, 15]
    assert not (cleaned & ~particle).any()
    assert cleaned.sum() >= 0.97 * particle.sum()


def test_a_sphere_is_measured_in_micrometres():
    radius, voxel = 10, (0.5, 0.5, 0.5)
    labels = ball((30, 30, 30), (15, 15, 15), radius).astype(np.uint32)
    (p,) = particle_table(labels, voxel)
    assert p.voxels == int(labels.sum())
    assert p.volume_um3 == pytest.approx(p.voxels * 0.125)
    assert p.equivalent_radius_um == pytest.approx(radius * 0.5, rel=0.02)
    sphere = 4 * math.pi * (radius * 0.5) ** 2
    assert sphere < p.surface_area_um2 < 1.12 * sphere  # marching cubes: ~9 % staircase
    assert (p.z0, p.z1, p.y0, p.y1) == (5, 26, 5, 26)
    assert not p.touches_border and p.boundary_fraction == 0


def test_a_particle_cut_by_the_edge_is_partial_and_a_grazing_one_is_not():
    shape = (30, 30, 30)
    cut = ball(shape, (15, 15, 2), 8)  # centre 2 voxels inside the x = 0 face
    grazing = ball(shape, (15, 15, 20), 8) & ~ball(shape, (15, 15, 20), 0)
    grazing[15, 15, 29] = True  # one voxel reaches the x = 29 face
    labels = cut.astype(np.uint32) + 2 * (grazing & ~cut)
    table = particle_table(labels, (1, 1, 1))
    by_id = {p.id: p for p in table}
    assert by_id[1].touches_border and by_id[1].boundary_fraction > 0.2
    assert by_id[2].touches_border and by_id[2].boundary_fraction < 0.2
    assert by_id[1].face_coverage > 0.6 and by_id[2].face_coverage == 1 / 17**2
    assert partial_particles(table) == partial_particles(table, rule="surface") == {1}


def test_a_rod_cut_by_the_edge_is_partial_by_the_papers_slice_rule_only():
    """Daemi et al. 2022, §4 judge a slice of the particle's box on the edge (here fully
    covered: the rod is cut there); the share of its surface on the edge is small."""
    labels = np.zeros((30, 30, 30), np.uint32)
    labels[13:18, 13:18, 0:25] = 1
    (rod,) = particle_table(labels, (1, 1, 1))
    assert rod.face_coverage == 1.0 and rod.boundary_fraction < 0.1
    assert partial_particles([rod]) == {1}
    assert partial_particles([rod], rule="surface") == set()
    with pytest.raises(VolumeError, match="partial-particle rule 'volume'"):
        partial_particles([rod], rule="volume")


def _particle(pid: int, sides: tuple[int, int, int], voxels: int) -> Particle:
    return Particle(pid, voxels, voxels, 1.0, 1.0, 0, 0, 0, *sides, False, 0.0)


def test_slice_like_artefacts_are_mahalanobis_outliers():
    rng = np.random.default_rng(0)
    particles = []
    for pid in range(1, 41):  # roundish particles: boxes about cubic, half filled
        side = int(rng.integers(8, 14))
        sides = (side + int(rng.integers(-1, 2)), side, side + int(rng.integers(-1, 2)))
        particles.append(_particle(pid, sides, int(0.52 * np.prod(sides))))
    particles.append(_particle(41, (1, 12, 12), 110))  # one slice thick
    particles.append(_particle(42, (2, 14, 13), 180))
    assert slice_artefacts(particles) == {41, 42}
    assert not mahalanobis_outliers(np.zeros((4, 3))).any()  # too few to estimate


def test_size_distribution_counts_every_particle():
    particles = [
        Particle(i, 1, 1.0, r, 1.0, 0, 0, 0, 1, 1, 1, False, 0.0)
        for i, r in enumerate([0.4, 1.1, 1.2, 2.6], start=1)
    ]
    counts, edges = size_distribution(particles, bin_um=1.0)
    assert counts.tolist() == [1, 2, 1] and edges.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_options_switch_the_watershed_off():
    both = ball((24, 24, 40), (12, 12, 12), 7) | ball((24, 24, 40), (12, 12, 24), 7)
    assert reassemble([both] * 3, ReassemblyOptions(watershed=False)).max() == 1
    assert reassemble([both] * 3).max() == 2


def test_bad_reassembly_options_and_bins_are_named():
    from tomoloop.particles.reassembly import VolumeError

    with pytest.raises(VolumeError, match="votes 0"):
        ReassemblyOptions(votes=0)
    with pytest.raises(VolumeError, match="erosion and min_voxels"):
        ReassemblyOptions(erosion=-1)
    with pytest.raises(VolumeError, match="unknown reassembly option 'erode'"):
        ReassemblyOptions.from_options({"erode": 2})
    assert ReassemblyOptions.from_options({"erosion": 0}).erosion == 0
    with pytest.raises(VolumeError, match="bin 0"):
        size_distribution([], bin_um=0)
