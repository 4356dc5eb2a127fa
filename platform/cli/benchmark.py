"""``tomoloop benchmark``: benchmarks of the loop (label efficiency of query strategies)."""

from pathlib import Path
from typing import Annotated

import typer

from tomoloop.cli.options import DeviceOpt, JsonFlag, parse_options
from tomoloop.cli.output import err, out
from tomoloop.cli.runner import run

benchmark_app = typer.Typer(help="Benchmarks of the loop.", no_args_is_help=True)


@benchmark_app.command("al")
def benchmark_al(
    gray: Annotated[Path, typer.Option(help="Grayscale stack.")],
    labels: Annotated[Path, typer.Option(help="Gold label stack (the direct oracle).")],
    phases: Annotated[str, typer.Option(help="Phase map, e.g. pore=0,nmc=1,cbd=2.")],
    strategies: Annotated[
        str, typer.Option(help="Comma-separated strategy names.")
    ] = "random,foreground_random,entropy,bald",
    seeds: Annotated[int, typer.Option(help="Repetitions with different seeds.")] = 3,
    rounds: Annotated[int, typer.Option(help="Rounds after the initial slices.")] = 4,
    budget: Annotated[int, typer.Option(help="Slices per round.")] = 4,
    initial: Annotated[int, typer.Option(help="Random slices labelled at the start.")] = 4,
    min_gap: Annotated[int, typer.Option(help="Minimum z gap between chosen slices.")] = 2,
    arch: Annotated[str, typer.Option(help="Architecture trained each round.")] = "unet",
    option: Annotated[
        list[str] | None, typer.Option(help="Network option KEY=VALUE (repeatable).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Epochs per training.")] = 6,
    patch: Annotated[int, typer.Option(help="Training patch side.")] = 64,
    patches_per_epoch: Annotated[int, typer.Option(help="Patches per epoch.")] = 128,
    plot: Annotated[Path | None, typer.Option(help="Write the curves as a PNG.")] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Label efficiency of query strategies with a direct oracle (no server): test mIoU
    against labelled slices, labels to reach 95 % of the full-data mIoU, area under curve.
    """
    from tomoloop.active.label_efficiency import EfficiencySetup, efficiency, stack_split
    from tomoloop.active.strategies import get
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.report.plots import plot_efficiency
    from tomoloop.stacks.tiff import open_stack
    from tomoloop.training.trainer import TrainConfig, resolve_device

    names = tuple(n.strip() for n in strategies.split(",") if n.strip())
    for name in names:
        get(name)
    phase_map = PhaseMap.parse(phases)
    if plot is not None:
        check_outputs({"--gray": gray, "--labels": labels}, [Output("--plot", plot)])
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
            overlap=patch // 4,
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


def _show_efficiency(document: dict) -> None:
    from rich.table import Table

    table = Table(title=f"label efficiency (full data mIoU {document['full_data_miou']:.4f})")
    for column in ("strategy", "labels to 95 %", "AUC", "curve"):
        table.add_column(column)
    for name, result in document["strategies"].items():
        table.add_row(
            name,
            str(result["labels_to_95"]),
            f"{result['auc']:.4f}",
            " ".join(f"{n}:{m:.3f}" for n, m in result["curve"]),
        )
    out.print(table)
