"""``tomoloop demo``: the main job end to end on a generated sample or your stacks."""

from pathlib import Path
from typing import Annotated

import typer

from tomoloop.cli.options import DeviceOpt, JsonFlag, PortOpt, StrategyOpt, stack_files
from tomoloop.cli.output import out, print_rows
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where results go.")] = Path("demo-out"),
    gray: Annotated[str | None, typer.Option(help="Your grayscale stack (with --labels).")] = None,
    labels: Annotated[
        str | None, typer.Option(help="Your rough label stack (with --gray).")
    ] = None,
    gold: Annotated[
        str | None, typer.Option(help="Exact labels the oracle answers from (default --labels).")
    ] = None,
    phases: Annotated[
        str | None, typer.Option(help="Phase map of your stacks, e.g. 'pore=0,nmc=1,cbd=2'.")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Active-learning rounds.")] = 3,
    budget: Annotated[int, typer.Option(help="Slices per round.")] = 4,
    strategy: StrategyOpt = "bald",
    port: PortOpt = 8080,
    annotator: Annotated[
        str, typer.Option(help="oracle (answers through Label Studio) or human (you label).")
    ] = "oracle",
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """The main job end to end: Label Studio up, ingest, train, active-learning rounds
    answered by the oracle through Label Studio, retrain, promote, report.
    """
    from tomoloop.active.strategies import get
    from tomoloop.flows.demo import demo as demo_flow
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.stacks.opener import open_stack

    if (gray is None) != (labels is None):
        raise TomoloopError("give both --gray and --labels, or neither to use the generated sample")
    if annotator not in ("oracle", "human"):
        raise TomoloopError(f"--annotator {annotator!r}: use oracle or human")
    if gray is not None and phases is None:
        raise TomoloopError("--phases is needed with your own stacks, e.g. pore=0,nmc=1,cbd=2")
    if phases is not None:
        PhaseMap.parse(phases)
    get(strategy)
    for path in (p for p in (gray, labels, gold) if p is not None):
        open_stack(path).close()
    inputs = {"--gray": gray, "--labels": labels, "--gold": gold}
    check_outputs(stack_files(inputs), [Output("--out", out_dir, folder=True)])
    run(
        lambda: demo_flow(
            str(out_dir),
            gray,
            labels,
            gold,
            phases,
            rounds=rounds,
            budget=budget,
            strategy=strategy,
            port=port,
            annotator=annotator,
            device=device,
        ),
        as_json,
        _show_demo,
        children=True,
    )


def _show_demo(result: dict) -> None:
    if "waiting_for" in result:
        out.print(
            f"round {result['waiting_for']} is waiting for you: annotate at "
            f"{result['annotate_at']} (admin@tomoloop.local; the password is in "
            f"{result['home']}/labelstudio/server.json). Then, with "
            f"TOMOLOOP_HOME={result['home']}: tomoloop pull --dataset "
            f"{result['dataset']} && tomoloop retrain --dataset {result['dataset']}"
        )
        return
    print_rows("models", result["models"])
    print_rows("rounds", result["rounds"])
    out.print(f"stopped: {result['loop']['stopped']}; champion: model {result['loop']['champion']}")
    scan = result["new_scan"]
    if scan is not None:
        history = scan["mIoU_history"]
        taught = ", ".join(f"{r['challenger_mIoU']:.4f}" for r in scan["rounds"])
        out.print(
            f"new scan: {len(scan['rounds'])} region rounds, {scan['curve']['points'][-1][0]} px "
            f"labelled; champion's test mIoU on it {history[0]:.4f} → {history[-1]:.4f} "
            f"(challengers {taught}); {scan['stopped']}"
        )
        control = scan["random_control"]
        out.print(
            f"random control on the same budget: {control['curve']['points'][-1][0]} px "
            f"labelled; {control['mIoU_history'][0]:.4f} → {control['mIoU_history'][-1]:.4f} "
            f"(its registry: {control['registry']})"
        )
    out.print(f"[green]✓[/] report: {result['report']}")
    out.print(
        f"Label Studio stays up at {result['label_studio']} (`tomoloop labelstudio down` stops "
        f"it), its ML backend at {result['ml_backend']} (`tomoloop serve-api --stop`); query "
        f"the registry with TOMOLOOP_HOME={result['home']} tomoloop registry models"
    )
