"""The active-learning loop: ``tomoloop round`` (score, choose, push), ``retrain``,
``promote`` and ``loop`` (rounds until a budget or no gain)."""

from functools import partial
from typing import Annotated

import typer

from tomoloop.cli.options import (
    BudgetPxOpt,
    DatasetOpt,
    DeviceOpt,
    JsonFlag,
    MarginOpt,
    MinDistanceOpt,
    MinGapOpt,
    PerVolumeOpt,
    RegionOpt,
    StrategyOpt,
    ToleranceOpt,
    UnitOpt,
    VolumeOpt,
    parse_pairs,
)
from tomoloop.cli.output import print_result
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError


def al_round_command(
    dataset: DatasetOpt,
    strategy: StrategyOpt = "bald",
    budget: Annotated[int, typer.Option(help="Slices in the round.")] = 8,
    per_volume: PerVolumeOpt = None,
    min_gap: MinGapOpt = 3,
    model: Annotated[int | None, typer.Option(help="Scoring model (default champion).")] = None,
    cost_aware: Annotated[
        bool, typer.Option(help="Rank by score per expected second of annotation.")
    ] = True,
    push: Annotated[bool, typer.Option(help="Push the round to Label Studio.")] = True,
    seed: Annotated[
        int, typer.Option(help="Seed of the random strategies and of MC-dropout's masks.")
    ] = 0,
    instance_model: Annotated[
        int | None,
        typer.Option(
            help="Mask R-CNN version: --strategy disagreement compares with it, and the "
            "push pre-fills its particles in the dataset's instance project."
        ),
    ] = None,
    volume: VolumeOpt = None,
    device: DeviceOpt = "auto",
    unit: UnitOpt = "slice",
    region: RegionOpt = 32,
    budget_px: BudgetPxOpt = None,
    min_distance: MinDistanceOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Open an active-learning round: score, choose the slices (or regions of slices)
    worth labelling, push them."""
    from tomoloop.active.requests import RoundRequest
    from tomoloop.flows.loop import al_round
    from tomoloop.services.rounds import strategy_for

    asked = RoundRequest.of(
        strategy, budget, min_gap, unit, region, budget_px, min_distance, per_volume
    )
    strategy_for(strategy, instance_model, asked.unit)
    asked.limits()
    run(
        lambda: al_round(
            dataset,
            strategy,
            budget,
            per_volume,
            min_gap,
            model,
            cost_aware,
            seed,
            push=push,
            instance_model=instance_model,
            **_query(volume, device, unit, region, budget_px, min_distance),
        ),
        as_json,
        lambda result: print_result(f"round {result['round']} of {dataset}", result),
        children=True,
    )


def retrain_command(
    dataset: DatasetOpt,
    fine_tune: Annotated[bool, typer.Option(help="Start from the champion's weights.")] = True,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Train a challenger on a new dataset version holding every slice's best label."""
    from tomoloop.flows.loop import retrain

    run(
        lambda: retrain(dataset, fine_tune=fine_tune, device=device),
        as_json,
        partial(print_result, f"challenger of {dataset}"),
        children=True,
    )


def promote_command(
    model: Annotated[int, typer.Option(help="Challenger model version id.")],
    margin: MarginOpt = 0.0,
    fraction_tolerance: ToleranceOpt = 0.05,
    tortuosity_tolerance: Annotated[
        float,
        typer.Option(
            help="Largest relative change of the pore's in-plane tortuosity (0.2 = 20 %)."
        ),
    ] = 0.2,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Promote a challenger that beats the champion on gold test and passes the gates."""
    from tomoloop.flows.loop import promote

    run(
        lambda: promote(model, "mIoU", margin, fraction_tolerance, device, tortuosity_tolerance),
        as_json,
        partial(print_result, f"model {model}"),
        children=True,
    )


def loop_command(
    dataset: DatasetOpt,
    rounds: Annotated[int, typer.Option(help="Most rounds to run.")] = 3,
    strategy: StrategyOpt = "bald",
    budget: Annotated[int, typer.Option(help="Slices per round.")] = 8,
    min_gap: MinGapOpt = 3,
    annotator: Annotated[
        str, typer.Option(help="oracle (answers from --truth) or human (stop after the push).")
    ] = "oracle",
    truth: Annotated[
        list[str] | None, typer.Option(help="VOLUME=LABELS.tif ground truth for the oracle.")
    ] = None,
    bias: Annotated[
        list[str] | None, typer.Option(help="Oracle bias PHASE=PIXELS (negative erodes).")
    ] = None,
    noise: Annotated[float, typer.Option(help="Oracle boundary noise probability.")] = 0.0,
    reviewer: Annotated[
        str | None,
        typer.Option(help="oracle: answer the review tasks from --truth too (default: people)."),
    ] = None,
    label_budget: Annotated[
        int | None,
        typer.Option(help="Stop after this many labels (slices; pixels with --unit region)."),
    ] = None,
    patience: Annotated[int, typer.Option(help="Stop after this many rounds without gain.")] = 2,
    margin: MarginOpt = 0.0,
    fraction_tolerance: ToleranceOpt = 0.05,
    per_volume: PerVolumeOpt = None,
    volume: VolumeOpt = None,
    device: DeviceOpt = "auto",
    unit: UnitOpt = "slice",
    region: RegionOpt = 32,
    budget_px: BudgetPxOpt = None,
    min_distance: MinDistanceOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Run active-learning rounds: choose → label in Label Studio → retrain → promote."""
    from tomoloop.active.oracle import Behaviour
    from tomoloop.active.selection import Constraints
    from tomoloop.flows.loop import loop

    try:
        biases = {k: int(v) for k, v in parse_pairs(bias, "--bias", "cbd=-1").items()}
    except ValueError:
        raise TomoloopError(f"--bias {bias}: PIXELS must be an integer, e.g. cbd=-1") from None
    behaviour = {"bias": biases, "noise": noise}
    Behaviour(**behaviour)
    Constraints(budget, per_volume, min_gap)
    run(
        lambda: loop(
            dataset,
            rounds,
            strategy,
            budget,
            min_gap,
            annotator,
            parse_pairs(truth, "--truth", "nmc=labels.tif"),
            behaviour,
            reviewer,
            label_budget,
            patience,
            margin=margin,
            fraction_tolerance=fraction_tolerance,
            per_volume=per_volume,
            **_query(volume, device, unit, region, budget_px, min_distance),
        ),
        as_json,
        partial(print_result, f"active learning on {dataset}"),
        children=True,
    )


def _query(
    volume: list[str] | None,
    device: str,
    unit: str,
    region: int,
    budget_px: int | None,
    min_distance: float | None,
) -> dict:
    """The options ``round`` and ``loop`` pass on alike: where to choose, on which device,
    and the unit (slices, or regions of ``region``² px for ``budget_px`` pixels a round)."""
    return {
        "volumes": tuple(volume or ()),
        "device": device,
        "unit": unit,
        "region": region,
        "budget_px": budget_px,
        "min_distance": min_distance,
    }
