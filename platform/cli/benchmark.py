"""``tomoloop benchmark``: benchmarks of the loop (label efficiency of query strategies)."""

from pathlib import Path
from typing import Annotated

import typer

from tomoloop.cli.options import DeviceOpt, JsonFlag, parse_options, stack_files
from tomoloop.cli.output import err, out
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError

benchmark_app = typer.Typer(help="Benchmarks of the loop.", no_args_is_help=True)


SLICE_MODE = ("gray", "labels", "budget", "initial", "min_gap", "arch", "option", "epochs",
              "patch", "patches_per_epoch")  # fmt: skip
SHIFT_MODE = ("source", "target", "unit", "region", "budget_px", "budget_growth", "quick", "replay",
              "workers")  # fmt: skip


def given_options(ctx: typer.Context, names: tuple[str, ...]) -> list[str]:
    """The flags (``--epochs``) of the parameters ``names`` the user gave on the command
    line (not left at their defaults)."""
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    sources = {n: ctx.get_parameter_source(n) for n in names}
    return [flags[n] for n, s in sources.items() if s and s.name not in ("DEFAULT", "DEFAULT_MAP")]


def check_mode_options(ctx: typer.Context, shift_mode: bool) -> None:
    """Refuse options of the other mode of ``benchmark al`` (they would be ignored).

    Raises:
        TomoloopError: naming them and the mode they belong to.
    """
    wrong = given_options(ctx, SLICE_MODE if shift_mode else SHIFT_MODE)
    if wrong:
        mode, other = ("--gray/--labels", "--source/--target")[:: -1 if shift_mode else 1]
        raise TomoloopError(
            f"{', '.join(wrong)} only apply with {other}, not with {mode}: leave them out"
        )


@benchmark_app.command("al")
def benchmark_al(
    ctx: typer.Context,
    phases: Annotated[str, typer.Option(help="Phase map, e.g. pore=0,nmc=1,cbd=2.")],
    gray: Annotated[str | None, typer.Option(help="Grayscale stack (slice mode).")] = None,
    labels: Annotated[
        str | None, typer.Option(help="Gold label stack (the direct oracle; slice mode).")
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(help="Domain-shift mode: a source scan GRAY:LABELS (repeatable)."),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Domain-shift mode: the new scan GRAY:LABELS.")
    ] = None,
    unit: Annotated[str, typer.Option(help="Domain-shift unit: slice or region.")] = "region",
    region: Annotated[int, typer.Option(help="Domain-shift region side in pixels.")] = 32,
    budget_px: Annotated[
        int, typer.Option(help="Domain-shift mode: labelled target pixels per round.")
    ] = 4096,
    budget_growth: Annotated[
        float,
        typer.Option(
            help="Domain-shift mode: each round labels this many times the pixels of the one "
            "before (2: 1, 2, 4… × --budget-px; the curve as fine early as late)."
        ),
    ] = 1.0,
    quick: Annotated[bool, typer.Option("--quick", help="A CI-sized domain-shift run.")] = False,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay/--no-replay",
            help="Domain-shift mode: fine-tune on source slices too (half the patches, weighted "
            "as the target's per labelled pixel), as the "
            "platform's loop trains on every scan; --no-replay: on the target only.",
        ),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Domain-shift mode: processes that run seeds and arms side by side, one "
            "per core (sooner; the same figures as one process with one torch thread).",
        ),
    ] = 1,
    strategies: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated strategy names; domain-shift arms also STRATEGY+self "
            "(self-training) and STRATEGY/slice or STRATEGY/region (the unit)."
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Repetitions with different seeds.")] = 3,
    rounds: Annotated[int, typer.Option(help="Rounds after the initial slices.")] = 4,
    budget: Annotated[int, typer.Option(help="Slice mode: slices per round.")] = 4,
    initial: Annotated[
        int, typer.Option(help="Slice mode: random slices labelled at the start.")
    ] = 4,
    min_gap: Annotated[
        int, typer.Option(help="Slice mode: minimum z gap between chosen slices.")
    ] = 2,
    arch: Annotated[
        str, typer.Option(help="Slice mode: architecture trained each round.")
    ] = "unet",
    option: Annotated[
        list[str] | None, typer.Option(help="Slice mode: network option KEY=VALUE (repeatable).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Slice mode: epochs per training.")] = 6,
    patch: Annotated[int, typer.Option(help="Slice mode: training patch side.")] = 64,
    patches_per_epoch: Annotated[int, typer.Option(help="Slice mode: patches per epoch.")] = 128,
    plot: Annotated[Path | None, typer.Option(help="Write the curves as a PNG.")] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Label efficiency of query strategies with a direct oracle (no server): test mIoU
    against labelled slices, labels to reach 95 % of the full-data mIoU, area under curve.
    With --target (domain-shift mode): a model trained on the --source scans meets the
    target; test mIoU against labelled target pixels, pixels to 95 % of the gain.
    """
    from tomoloop.active.label_efficiency import EfficiencySetup, efficiency, stack_split
    from tomoloop.active.strategies import get
    from tomoloop.inference.predict import default_overlap
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.report.plots import plot_efficiency
    from tomoloop.stacks.opener import open_stack
    from tomoloop.training.trainer import TrainConfig, resolve_device

    shift_mode = target is not None or bool(source)
    check_mode_options(ctx, shift_mode)
    if shift_mode:
        _benchmark_shift(
            phases, source or [], target, unit, region, budget_px, budget_growth, quick, replay,
            workers, strategies, seeds, rounds, plot, str(resolve_device(device)), as_json,
        )  # fmt: skip
        return
    if gray is None or labels is None:
        raise TomoloopError(
            "benchmark al needs --gray and --labels (slices of one scan), or --source and "
            "--target GRAY:LABELS (a new scan)"
        )
    strategies = strategies or "random,foreground_random,entropy,bald"
    names = tuple(n.strip() for n in strategies.split(",") if n.strip())
    for name in names:
        get(name)
    phase_map = PhaseMap.parse(phases)
    if plot is not None:
        check_outputs(stack_files({"--gray": gray, "--labels": labels}), [Output("--plot", plot)])
    setup = EfficiencySetup(
        names,
        seeds,
        rounds,
        budget,
        initial,
        min_gap,
        arch,
        parse_options(option),
        TrainConfig(
            epochs=epochs,
            patch=patch,
            patches_per_epoch=patches_per_epoch,
            overlap=default_overlap(patch),
            patience=0,
        ),
        str(resolve_device(device)),
    )

    def work() -> dict:
        with open_stack(gray) as g, open_stack(labels) as lab:
            split = stack_split(g, lab, phase_map)
        document = efficiency(
            split,
            setup,
            on_curve=lambda name, seed, curve: err.print(
                f"[cyan]•[/] {name} seed {seed}: " + ", ".join(f"{n}→{m:.3f}" for n, m in curve)
            ),
        )
        if plot is not None:
            document["plot"] = str(plot_efficiency(document, plot))
        return document

    run(work, as_json, _show_efficiency)


def _benchmark_shift(
    phases: str,
    sources: list[str],
    target: str | None,
    unit: str,
    region: int,
    budget_px: int,
    budget_growth: float,
    quick: bool,
    replay: bool,
    workers: int,
    strategies: str | None,
    seeds: int,
    rounds: int,
    plot: Path | None,
    device: str,
    as_json: bool,
) -> None:
    """``benchmark al`` in domain-shift mode (:mod:`tomoloop.active.domain_shift`)."""
    import tomoloop.active.shift_setup as shift
    from tomoloop.active.domain_shift import domain_shift
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.report.plots import plot_domain_shift

    if target is None or not sources:
        raise shift.BenchmarkError("domain-shift mode needs --source and --target GRAY:LABELS")
    pairs = [shift.parse_pair(text) for text in sources]
    goal = shift.parse_pair(target)
    inputs = {f"--source {k + 1}": p for k, pair in enumerate(pairs) for p in pair}
    inputs |= {"--target gray": goal[0], "--target labels": goal[1]}
    check_outputs(stack_files(inputs), [Output("--plot", plot)] if plot is not None else [])
    setup = shift.ShiftSetup(
        shift.parse_arms(strategies or shift.DEFAULT_ARMS, unit),
        seeds=seeds,
        rounds=rounds,
        budget_px=budget_px,
        budget_growth=budget_growth,
        region=region,
        replay=replay,
        device=device,
    )
    setup = shift.quick(setup) if quick else setup

    def work() -> dict:
        document = domain_shift(
            shift.read_shift_data(pairs, goal, PhaseMap.parse(phases)),
            setup,
            on_curve=lambda name, seed, curve, seconds: err.print(
                f"[cyan]•[/] {name} seed {seed} ({seconds:.0f} s): "
                + ", ".join(f"{n}→{m:.3f}" for n, m in curve)
            ),
            on_reference=lambda initial, full: err.print(
                f"[cyan]•[/] start {initial:.4f}, all target labels {full:.4f}"
            ),
            workers=workers,
        )
        if plot is not None:
            document["plot"] = str(plot_domain_shift(document, plot))
        return document

    run(work, as_json, _show_shift, children=workers > 1)  # workers end with it


def _show_shift(document: dict) -> None:
    verdict = "valid" if document["valid"] else "NOT valid (gain < 0.05): no arm claims anything"
    _show_curves(
        document,
        f"domain shift: sources only {document['sources_only_miou']:.4f}, start (target val "
        f"selection) {document['initial_miou']:.4f}, all target labels "
        f"{document['full_data_miou']:.4f} ({verdict})",
        ("arm", "pixels to 95 % of the gain"),
        "pixels_to_95",
    )


def _show_efficiency(document: dict) -> None:
    _show_curves(
        document,
        f"label efficiency (full data mIoU {document['full_data_miou']:.4f})",
        ("strategy", "labels to 95 %"),
        "labels_to_95",
    )


def _show_curves(document: dict, title: str, heads: tuple[str, str], to_95: str) -> None:
    """One row per arm of a benchmark document: its name, ``to_95``, AUC and curve."""
    from rich.table import Table

    table = Table(title=title)
    for column in (*heads, "AUC", "curve"):
        table.add_column(column)
    for name, result in document["strategies"].items():
        table.add_row(
            name,
            str(result[to_95]),
            f"{result['auc']:.4f}",
            " ".join(f"{n}:{m:.3f}" for n, m in result["curve"]),
        )
    out.print(table)
