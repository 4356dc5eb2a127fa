"""Pictures and a summary of an active-learning run, for people rather than programs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tomoloop.report.overlays import overlay


def plot_al_curve(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    path: str | os.PathLike[str],
    unit: str = "slices",
) -> Path:
    """The champion's test mIoU against what people labelled so far (``unit``: slices, or
    labelled pixels for region rounds), one line per named curve (a legend when there are
    several: a strategy beside its control), as a PNG."""
    fig = Figure(figsize=(5, 3.4), dpi=110)
    ax = fig.subplots()
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set(xlabel=f"{unit} labelled in Label Studio", ylabel="champion test mIoU")
    ax.set(title="active learning")
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def uncertainty_figure(
    gray: np.ndarray,
    predicted: np.ndarray,
    uncertainty: np.ndarray,
    title: str,
    path: str | os.PathLike[str],
) -> Path:
    """One slice three ways as a PNG: grey (uint8 (H, W)), the predicted classes over it
    ((H, W) class indices) and the per-pixel uncertainty ((H, W) float).
    """
    fig = Figure(figsize=(10, 3.6), dpi=110)
    axes = fig.subplots(1, 3)
    axes[0].imshow(gray, cmap="gray")
    axes[0].set_title("slice")
    axes[1].imshow(overlay(gray, predicted, min_side=gray.shape[0]))
    axes[1].set_title("prediction")
    shown = axes[2].imshow(uncertainty, cmap="magma")
    axes[2].set_title("uncertainty")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def plot_efficiency(document: dict, path: str | os.PathLike[str]) -> Path:
    """Test mIoU against labelled slices per strategy (mean over seeds) with the full-data
    mIoU and its 95 % line, as a PNG; ``document`` as :func:`tomoloop.active.efficiency`
    returns it.
    """
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.subplots()
    for name, result in document["strategies"].items():
        curve = result["curve"]
        ax.plot([p[0] for p in curve], [p[1] for p in curve], marker="o", ms=3, label=name)
    full = document["full_data_miou"]
    ax.axhline(full, color="black", lw=1, label=f"all {document['pool_slices']} slices")
    ax.axhline(0.95 * full, color="black", lw=1, ls="--", label="95 % of that")
    ax.set(xlabel="labelled slices", ylabel="test mIoU", title="label efficiency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def plot_domain_shift(document: dict, path: str | os.PathLike[str]) -> Path:
    """Target test mIoU against labelled target pixels, one line per arm (mean over seeds,
    the seeds' spread shaded), with the initial, full-data and 95 %-of-the-gain levels, as
    a PNG; ``document`` as :func:`tomoloop.active.domain_shift.domain_shift` returns it.
    """
    fig = Figure(figsize=(7.2, 4.6), dpi=110)
    ax = fig.subplots()
    for name, result in document["strategies"].items():
        xs = np.array([p[0] for p in result["curve"]], float)
        (line,) = ax.plot(xs, [p[1] for p in result["curve"]], marker="o", ms=3, label=name)
        seeds = [c[: len(xs)] for c in result["seeds"]]
        if len(seeds) > 1:
            ys = np.array([[p[1] for p in c] for c in seeds])
            ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.15)
    levels = (
        ("sources_only_miou", "sources only", ":"),
        ("initial_miou", "start: sources, target val selection", "-."),
        ("full_data_miou", "all target labels", "-"),
        ("target_miou", "95 % of the gain", "--"),
    )
    for key, label, style in levels:
        ax.axhline(document[key], color="black", lw=1, ls=style, label=label)
    title = "label efficiency on the target" + (
        "" if document["valid"] else f" (NOT valid: gain {document['gain']:+.3f}, too small)"
    )
    ax.set(xlabel="labelled target pixels", ylabel="target test mIoU", title=title)
    if document.get("budget_growth", 1.0) > 1:  # rounds growing geometrically: a log axis
        ax.set_xscale("symlog", linthresh=document["budget_px"])
        ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def plot_size_distribution(
    counts: np.ndarray, edges: np.ndarray, title: str, path: str | os.PathLike[str]
) -> Path:
    """Particle-size distribution (counts per equivalent-radius bin, µm) as a PNG."""
    fig = Figure(figsize=(5, 3.4), dpi=110)
    ax = fig.subplots()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black")
    ax.set(xlabel="equivalent radius (µm)", ylabel="particles", title=title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
