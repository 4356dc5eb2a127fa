"""Synthetic electrodes with exact labels, and a CT forward model that makes them look scanned.

Used by the demo (a user has only the repo, so the sample is generated) and by tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from tomoloop.labels.phases import PhaseMap

ELECTRODE_PHASES = PhaseMap(("pore", "nmc", "cbd"), (0, 1, 2))


@dataclass(frozen=True)
class Electrode:
    """A synthetic cathode. Arrays are (z, y, x).

    Attributes:
        labels: uint8 phase labels (``ELECTRODE_PHASES``: pore 0, nmc 1, cbd 2).
        particles: uint32 particle ids (0 outside particles), exact instances.
        gray: uint16 CT-like grayscale from :func:`forward_model`.
        voxel_size: (z, y, x) in µm.
    """

    labels: np.ndarray
    particles: np.ndarray
    gray: np.ndarray
    voxel_size: tuple[float, float, float]


def particle_packing(
    shape: tuple[int, int, int],
    radii_fractions: tuple[tuple[int, float], ...] = ((10, 0.25), (7, 0.12), (5, 0.08)),
    seed: int = 0,
) -> np.ndarray:
    """Bool (z, y, x) packing of non-touching spheres (porespy ``random_spheres``, clearance 1).

    ``radii_fractions`` lists (radius in voxels, target volume fraction), largest first.
    """
    import porespy  # slow import (numba); only needed here

    solid = np.zeros(shape, dtype=bool)
    for k, (radius, phi) in enumerate(radii_fractions):
        solid = porespy.generators.random_spheres(
            im=solid, r=radius, clearance=1, phi=phi, seed=seed + k, edges="extended"
        )
    return solid.astype(bool)


def carbon_binder(
    solid: np.ndarray, fraction: float = 0.1, reach: float = 3.0, seed: int = 0
) -> np.ndarray:
    """Bool carbon-binder domain in the pore space within ``reach`` voxels of a particle.

    Smooth random blobs are thresholded so that the CBD fills about ``fraction`` of the
    volume, concentrated in necks between particles as in a "bridge" morphology.
    """
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(solid.shape), sigma=2.0)
    near = ndimage.distance_transform_edt(~solid) <= reach
    candidates = near & ~solid
    if not candidates.any():
        return candidates
    keep = min(1.0, fraction * solid.size / candidates.sum())
    threshold = np.quantile(field[candidates], 1.0 - keep)
    return candidates & (field >= threshold)


def forward_model(
    labels: np.ndarray,
    grey_levels: tuple[float, ...] = (9000.0, 36000.0, 16000.0),
    psf_sigma: float = 1.0,
    noise_sigma: float = 1800.0,
    seed: int = 0,
) -> np.ndarray:
    """CT-like uint16 grayscale from phase labels: grey level per class, PSF blur, noise.

    Args:
        labels: (z, y, x) class indices 0..len(grey_levels)-1.
        grey_levels: mean grey value per class, in the order pore, nmc, cbd: pore darkest,
            the dense oxide brightest, carbon binder faint (it barely absorbs X-rays,
            Tabassum et al. n.d., App. §II, so it sits near the pore).
        psf_sigma: Gaussian point-spread function σ in voxels.
        noise_sigma: Gaussian noise σ in grey values.
    """
    image = np.asarray(grey_levels, dtype=np.float32)[labels]
    image = ndimage.gaussian_filter(image, psf_sigma)
    image += np.random.default_rng(seed).normal(0.0, noise_sigma, image.shape).astype(np.float32)
    return np.clip(image, 0, 65535).round().astype(np.uint16)


def beam_hardening(gray: np.ndarray, cupping: float, drift: float) -> np.ndarray:
    """(z, y, x) grey values darkened towards each slice's centre by up to ``cupping``
    (a fraction; the cupping artefact of a polychromatic beam) and scaled along z by a
    linear drift of ``drift`` (fraction, from the first slice to the last).
    """
    _, h, w = gray.shape
    yy, xx = np.mgrid[:h, :w]
    r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    radial = 1.0 - cupping * (1.0 - r2)
    along_z = 1.0 + drift * np.linspace(0.0, 1.0, gray.shape[0])
    return gray * radial[None] * along_z[:, None, None]


def make_electrode(
    shape: tuple[int, int, int] = (48, 128, 128),
    voxel_size: tuple[float, float, float] = (0.5, 0.5, 0.5),
    seed: int = 0,
) -> Electrode:
    """A small NMC cathode: spheres (nmc), carbon-binder bridges (cbd), pore; and its CT."""
    solid = particle_packing(shape, seed=seed)
    cbd = carbon_binder(solid, seed=seed)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[cbd] = 2
    labels[solid] = 1
    particles = cc3d.connected_components(solid, connectivity=26).astype(np.uint32)
    return Electrode(labels, particles, forward_model(labels, seed=seed), voxel_size)


def cracked_particles(
    shape: tuple[int, int, int], radius: int, cracked: Sequence[bool], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spherical particles in a row along x, some crossed by a planar crack.

    Returns ``(grey (Z, Y, X) uint8, labels (Z, Y, X) uint32 particle ids 1..n, flaw
    (Z, Y, X) bool)``: particle ``i + 1`` is cracked when ``cracked[i]``; a crack is a
    2-voxel-thick vertical plane through the centre at a random angle (so every z slice of
    the particle shows it), dark like the pore.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[tuple(slice(0, s) for s in shape)]
    labels = np.zeros(shape, np.uint32)
    flaw = np.zeros(shape, bool)
    step = shape[2] / len(cracked)
    for i, crack in enumerate(cracked):
        centre = (shape[0] / 2, shape[1] / 2, step * (i + 0.5))
        ball = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
        labels[ball] = i + 1
        if crack:
            angle = rng.uniform(0, np.pi)
            offset = (y - centre[1]) * np.cos(angle) + (x - centre[2]) * np.sin(angle)
            plane = np.abs(offset) + 0 * z <= 1.0
            flaw |= ball & plane
    grey = np.where(labels > 0, 200.0, 50.0)
    grey[flaw] = 50.0
    grey += rng.normal(0, 12, shape)
    return np.clip(grey, 0, 255).astype(np.uint8), labels, flaw
