"""3D particle ids for the 2D instances of a stack, linked slice by slice."""

from __future__ import annotations

import cv2
import numpy as np

from tomoloop.coco.instances import Connectivity

_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
_EXACT_FLOAT32 = 1 << 24  # labels below this are exact in float32 (OpenCV morphology)


def touching_pairs(
    before: np.ndarray, now: np.ndarray, diagonal: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct (label in ``before``, label in ``now``) pair of components that touch
    across two neighbouring slices: both (h, w) int component labels (0 = none).

    Two components touch when they cover one (y, x); with ``diagonal`` (26-connectivity,
    for 8-connected slices) also when they cover 8-neighbouring positions. Only pixels on
    a component's border can show a pair that their neighbours do not (an overlap has a
    pixel on its own border, which is on the border of one of the two components; the
    image edge counts as a border), so only those pixels are compared.

    Returns:
        (m,) int64 labels in ``before`` and (m,) int64 labels in ``now``, sorted, unique.
    """
    w = now.shape[1]
    top = int(now.max(initial=0)) + 1
    if top == 1 or not before.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    near_now = _border(now, top)
    candidates = (before > 0) & (near_now | _border(before, int(before.max()) + 1))
    at = np.flatnonzero(candidates)  # flat (y * w + x) indices
    own, other = now.ravel()[at], before.ravel()[at].astype(np.int64) * top
    codes = [other[own > 0] + own[own > 0]]
    if diagonal:
        on_border = near_now.ravel()[at]
        at, own, other = at[on_border], own[on_border], other[on_border]
        at_padded = at + 2 * (at // w) + w + 3  # (y + 1) * (w + 2) + x + 1
        padded = np.pad(now, 1).ravel()
        for dy, dx in _NEIGHBOURS:
            near = padded[at_padded + dy * (w + 2) + dx]
            new = (near > 0) & (near != own)  # near == own > 0 is a pair found above
            codes.append(other[new] + near[new])
    unique = np.unique(np.concatenate(codes))
    return unique // top, unique % top


def _border(labels: np.ndarray, top: int) -> np.ndarray:
    """(h, w) bool: pixels whose 3×3 neighbourhood (outside the image: 0) is not one label."""
    if top >= _EXACT_FLOAT32:  # too many labels for float32: treat every pixel as border
        return np.ones(labels.shape, bool)
    values = labels.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    edge = cv2.BORDER_CONSTANT
    return cv2.dilate(values, kernel, borderType=edge, borderValue=0) != cv2.erode(
        values, kernel, borderType=edge, borderValue=0
    )


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest node of each node's connected component: (n,) int64, given the
    undirected edges ``a[k]``–``b[k]`` between nodes 0..n-1 ((e,) int arrays).

    Vectorised union-find: every edge hooks the larger of its two roots under the smaller,
    then every node jumps to its parent's parent until all point at their root; repeated
    until no edge joins two roots.
    """
    root: np.ndarray = np.arange(n, dtype=np.int64)
    while a.size:
        ra, rb = root[a], root[b]
        joined = ra != rb
        a, b, ra, rb = a[joined], b[joined], ra[joined], rb[joined]
        np.minimum.at(root, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            up = root[root]
            if np.array_equal(up, root):
                break
            root = up
    return root


class ParticleLinker:
    """3D particle ids from the 2D components of consecutive slices, one slice at a time.

    Two components of one phase in neighbouring slices are one particle when they touch in
    3D (6-connected for 4-connectivity in plane, 26 for 8; :func:`touching_pairs`); the
    particles are the connected components of that graph over every slice
    (:func:`components`). The result is the particles cc3d finds in the whole volume,
    without ever holding the volume: only the previous slice's labels and one edge per
    touching pair are kept.
    """

    def __init__(self, connectivity: Connectivity = 8) -> None:
        self._nodes = 0
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._previous: list[tuple[np.ndarray, int]] | None = None  # per phase: labels, node 0
        self._diagonal = connectivity == 8

    def add(
        self,
        labels_per_phase: list[np.ndarray],
        touching: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> np.ndarray:
        """Register the next slice's components (per phase, labels 1..n); their node ids.

        Node ids are in the order of :class:`tomoloop.coco.instances.SliceInstances`
        (phase by phase, label order). ``touching``: per phase, :func:`touching_pairs` of
        the previous slice and this one when already computed (e.g. on a worker thread).
        """
        current, nodes = [], []
        for labels in labels_per_phase:
            n, first = int(labels.max(initial=0)), self._nodes
            self._nodes += n
            current.append((labels, first))
            nodes.append(np.arange(first, first + n))
        if self._previous is not None:
            if touching is None:
                touching = [
                    touching_pairs(before, now, self._diagonal)
                    for (before, _), (now, _) in zip(self._previous, current, strict=True)
                ]
            starts = zip(self._previous, current, touching, strict=True)
            for (_, node0), (_, node1), (a, b) in starts:
                if a.size:
                    self._edges.append((node0 + a - 1, node1 + b - 1))
        self._previous = current
        return np.concatenate(nodes) if nodes else np.zeros(0, dtype=np.int64)

    def particle_ids(self) -> np.ndarray:
        """Particle id (1..) of every node, numbered in order of first appearance."""
        ends = [np.concatenate(side) for side in zip(*self._edges, strict=True)]
        a, b = ends if ends else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        root = components(self._nodes, a, b)  # a component's smallest node: seen first
        return np.unique(root, return_inverse=True)[1].astype(np.int64) + 1
