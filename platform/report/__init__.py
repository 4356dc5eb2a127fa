"""Pictures for people: overlays, learning and efficiency curves, size distributions, and
the layers a viewer shows of a volume."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.report.layers import Layer, phase_colour, volume_layers
    from tomoloop.report.overlays import instance_colours, overlay
    from tomoloop.report.plots import (
        plot_al_curve,
        plot_domain_shift,
        plot_efficiency,
        plot_size_distribution,
        uncertainty_figure,
    )

__all__ = [
    "Layer",
    "instance_colours",
    "overlay",
    "phase_colour",
    "plot_al_curve",
    "plot_domain_shift",
    "plot_efficiency",
    "plot_size_distribution",
    "uncertainty_figure",
    "volume_layers",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
