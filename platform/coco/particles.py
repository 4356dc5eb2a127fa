"""3D particle ids for the 2D instances of a stack, linked slice by slice."""

from __future__ import annotations

import cc3d
import numpy as np

from tomoloop.coco.instances import Connectivity


class ParticleLinker:
    """3D particle ids from the 2D components of consecutive slices, one slice at a time.

    Two components of one phase in neighbouring slices are one particle when they touch in
    3D (6-connected for 4-connectivity in plane, 26 for 8): cc3d on the two-slice stack
    decides, union-find over component nodes carries it through the volume. The result is
    the particles cc3d finds in the whole volume, without ever holding the volume.
    """

    def __init__(self, connectivity: Connectivity = 8) -> None:
        self._parent: list[int] = []
        self._previous: list[tuple[np.ndarray, int]] | None = None  # per phase: labels, node 0
        self._connectivity_3d = 26 if connectivity == 8 else 6

    def add(self, labels_per_phase: list[np.ndarray]) -> np.ndarray:
        """Register the next slice's components (per phase, labels 1..n); their node ids.

        Node ids are in the order of :class:`SliceInstances` (phase by phase, label order).
        """
        current, nodes = [], []
        for labels in labels_per_phase:
            n, first = int(labels.max(initial=0)), len(self._parent)
            self._parent.extend(range(first, first + n))
            current.append((labels, first))
            nodes.append(np.arange(first, first + n))
        if self._previous is not None:
            for (before, node0), (now, node1) in zip(self._previous, current, strict=True):
                for a, b in self._touching(before, now):
                    self._union(node0 + a - 1, node1 + b - 1)
        self._previous = current
        return np.concatenate(nodes) if nodes else np.zeros(0, dtype=np.int64)

    def particle_ids(self) -> np.ndarray:
        """Particle id (1..) of every node, numbered in order of first appearance."""
        roots = np.array([self._find(i) for i in range(len(self._parent))], dtype=np.int64)
        _, first_seen, inverse = np.unique(roots, return_index=True, return_inverse=True)
        return np.argsort(np.argsort(first_seen))[inverse] + 1

    def _touching(self, before: np.ndarray, now: np.ndarray) -> list[tuple[int, int]]:
        """(label in ``before``, label in ``now``) pairs of components that touch in 3D."""
        pair = np.stack([before > 0, now > 0])  # (2, h, w)
        joint = cc3d.connected_components(pair, connectivity=self._connectivity_3d)
        group_of = []  # per slice: the 3D component of each 2D label (a 2D label lies in one)
        for labels, plane in zip((before, now), joint, strict=True):
            table = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int64)
            table[labels.ravel()] = plane.ravel()
            group_of.append(table[1:])
        first_before: dict[int, int] = {}
        first_now: dict[int, int] = {}
        for a, group in enumerate(group_of[0].tolist(), start=1):
            first_before.setdefault(group, a)
        for b, group in enumerate(group_of[1].tolist(), start=1):
            first_now.setdefault(group, b)
        # every component of a group meets the other slice's first one: the group is joined
        pairs = [(a, first_now[g]) for a, g in enumerate(group_of[0].tolist(), 1) if g in first_now]
        pairs += [
            (first_before[g], b) for b, g in enumerate(group_of[1].tolist(), 1) if g in first_before
        ]
        return pairs

    def _find(self, i: int) -> int:
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def _union(self, i: int, j: int) -> None:
        ri, rj = self._find(i), self._find(j)
        if ri != rj:
            self._parent[max(ri, rj)] = min(ri, rj)
