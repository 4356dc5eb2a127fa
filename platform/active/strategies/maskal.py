"""``maskal``: where a Mask R-CNN is least sure of its own particles."""

from __future__ import annotations

from tomoloop.active.selection import UncertaintyStrategy


class MaskalStrategy(UncertaintyStrategy):
    """Slices where a registered Mask R-CNN is least sure of its particles first: the mean
    of its detections' 1 − score and of how much its detections change when the slice is
    flipped (:func:`tomoloop.particles.instance_uncertainty`; unmatched instances count 1,
    matched ones 1 − IoU). Instance-level uncertainty from repeated predictions as in
    MaskAL (Blok et al. 2022), which repeats them by MC dropout; flips need no dropout
    layer in the detector.
    """

    name = "maskal"
    instances = "flips"
