"""Pictures for people: overlays, learning and efficiency curves, size distributions."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.report.overlays import instance_colours, overlay
    from tomoloop.report.plots import (
        plot_al_curve,
        plot_domain_shift,
        plot_efficiency,
        plot_size_distribution,
        uncertainty_figure,
    )

__all__ = [
    "instance_colours",
    "overlay",
    "plot_al_curve",
    "plot_domain_shift",
    "plot_efficiency",
    "plot_size_distribution",
    "uncertainty_figure",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
