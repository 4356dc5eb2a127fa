"""``tomoloop serve`` (the loop's Prefect deployments) and ``tomoloop serve-api`` (the HTTP
app): long-running servers, stopped with Ctrl-C."""

from typing import Annotated

import typer

from tomoloop.cli.options import (
    BudgetPxOpt,
    DeviceOpt,
    MinDistanceOpt,
    RegionOpt,
    StrategyOpt,
    UnitOpt,
)
from tomoloop.cli.output import out
from tomoloop.cli.runner import run


def serve_api(
    port: Annotated[int, typer.Option(help="Port on --host.")] = 8700,
    host: Annotated[
        str, typer.Option(help="Interface to bind; beyond loopback needs TOMOLOOP_API_TOKEN.")
    ] = "127.0.0.1",
    device: DeviceOpt = "auto",
    background: Annotated[
        bool,
        typer.Option(
            "--background",
            help="Start it on 127.0.0.1 in the background (it outlives this command).",
        ),
    ] = False,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the app started with --background.")
    ] = False,
) -> None:
    """Serve the HTTP app: Label Studio webhooks, the ML backend of every dataset (its
    champion predicts on --device; /ml/DATASET) and the read-only registry API (/docs)."""
    from tomoloop.config import Settings

    settings = Settings()
    if background or stop:
        from tomoloop.adapters.api_server import LocalApi

        local = LocalApi(settings.home, port)
        if stop:
            run(local.down, as_json=False, show=_show_stopped)
            return
        run(lambda: local.up(device), as_json=False, show=lambda url: out.print(f"✓ {url}"))
        return

    import uvicorn

    from tomoloop.adapters.http import check_exposure, create_app
    from tomoloop.flows.deployments import start_retrain
    from tomoloop.services import ChampionBackend, Services
    from tomoloop.training.trainer import resolve_device

    check_exposure(host, settings)
    torch_device = resolve_device(device)

    def work() -> None:
        with Services.from_settings(settings) as services:
            app = create_app(
                settings,
                on_new_labels=start_retrain,
                predictions=ChampionBackend(services, torch_device),
                on_train=start_retrain,
            )
            uvicorn.run(app, host=host, port=port, log_level="info")

    run(work, as_json=False, children=True)


def serve(
    dataset: Annotated[str, typer.Option(help="Dataset whose loop to run.")],
    round_cron: Annotated[str, typer.Option(help="Cron schedule of new rounds.")] = "0 2 * * *",
    check_minutes: Annotated[int, typer.Option(help="Minutes between new-label checks.")] = 15,
    sync_minutes: Annotated[int, typer.Option(help="Minutes between Label Studio polls.")] = 5,
    threshold: Annotated[int, typer.Option(help="New labels that start a retraining.")] = 8,
    strategy: StrategyOpt = "bald",
    budget: Annotated[int, typer.Option(help="Slices per round.")] = 8,
    unit: UnitOpt = "slice",
    region: RegionOpt = 32,
    budget_px: BudgetPxOpt = None,
    min_distance: MinDistanceOpt = None,
) -> None:
    """Run the loop's deployments (sync, retrain on new labels, scheduled rounds) until
    stopped; needs a Prefect server (PREFECT_API_URL).
    """
    from prefect import serve as prefect_serve

    from tomoloop.active.requests import RoundRequest
    from tomoloop.flows.deployments import Schedule, deployments
    from tomoloop.services.rounds import strategy_for

    asked = RoundRequest.of(strategy, budget, 0, unit, region, budget_px, min_distance)
    strategy_for(strategy, None, asked.unit)
    asked.limits()
    when = Schedule(
        round_cron, check_minutes, sync_minutes, threshold, strategy, budget,
        unit, region, budget_px, min_distance,
    )  # fmt: skip
    run(lambda: prefect_serve(*deployments(dataset, when)), as_json=False, children=True)


def _show_stopped(pid: int | None) -> None:
    if pid:
        out.print(f"✓ stopped the background HTTP app (pid {pid})")
    else:
        out.print("the background HTTP app was not running")
