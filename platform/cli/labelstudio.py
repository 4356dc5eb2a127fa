"""``tomoloop labelstudio`` (the local server), ``tomoloop push`` and ``tomoloop pull``:
rounds to Label Studio and annotations back."""

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from tomoloop.cli.options import DatasetOpt, DeviceOpt, JsonFlag, PortOpt
from tomoloop.cli.output import err, out
from tomoloop.cli.runner import run

if TYPE_CHECKING:
    from tomoloop.adapters.labelstudio_server import LocalLabelStudio

labelstudio_app = typer.Typer(
    help="Label Studio: the local server, pushing rounds, pulling annotations.",
    no_args_is_help=True,
)


def _local_label_studio(port: int = 8080) -> "LocalLabelStudio":
    from tomoloop.adapters.labelstudio_server import LocalLabelStudio
    from tomoloop.config import Settings

    return LocalLabelStudio(Settings().home, port=port)


def _show_server(info: dict) -> None:
    if info["running"]:
        out.print(
            f"[green]✓[/] Label Studio at {info['url']} (pid {info['pid']}), "
            f"data {info['data_dir']}"
        )
    else:
        out.print(f"Label Studio is not running (data {info['data_dir']})")


@labelstudio_app.command("up")
def labelstudio_up(port: PortOpt = 8080, as_json: JsonFlag = False) -> None:
    """Install (first time, a few minutes) and start the local server; wait until healthy."""
    server = _local_label_studio(port)

    def work() -> dict:
        with err.status("starting Label Studio (the first start migrates its database)…"):
            return asdict(server.up())

    run(work, as_json, _show_server, children=True)


@labelstudio_app.command("down")
def labelstudio_down(as_json: JsonFlag = False) -> None:
    """Stop the local server (its data stays)."""
    server = _local_label_studio()

    def work() -> dict:
        stopped = server.down()
        return {**asdict(server.status()), "stopped": stopped}

    def show(info: dict) -> None:
        if info["stopped"]:
            out.print(f"[green]✓[/] stopped Label Studio (pid {info['stopped']}); its data stays")
            out.print(f"  in {info['data_dir']}; `tomoloop labelstudio up` starts it again")
        else:
            out.print(f"Label Studio was not running (data {info['data_dir']})")

    run(work, as_json, show)


@labelstudio_app.command("status")
def labelstudio_status(as_json: JsonFlag = False) -> None:
    """Whether the local server runs, where, and where its data and log are."""
    run(lambda: asdict(_local_label_studio().status()), as_json, _show_server)


@labelstudio_app.command("connect")
def labelstudio_connect(
    dataset: Annotated[str, typer.Option(help="Dataset whose project gets the ML backend.")],
    url: Annotated[
        str,
        typer.Option(
            help="Where Label Studio reaches `tomoloop serve-api` (start it first).",
        ),
    ] = "http://127.0.0.1:8700",
    as_json: JsonFlag = False,
) -> None:
    """Register tomoloop's HTTP app as the ML backend of the dataset's project: every task
    opened without a prediction gets the champion's, and Start training retrains."""
    from tomoloop.services import Services, connect_backend

    def work() -> dict:
        with Services.from_settings(create=False) as services:
            return connect_backend(services, dataset, url)

    run(work, as_json, _show_connected)


def _show_connected(result: dict) -> None:
    champion = result["model_version"]
    model = f"champion model {champion}" if champion else "no champion yet"
    out.print(
        f"[green]✓[/] ML backend {result['backend_url']} connected to project "
        f"{result['project']} ({model}); annotate at {result['url']}"
    )


def push_command(
    round_id: Annotated[int, typer.Option("--round", help="Active-learning round id.")],
    context: Annotated[int, typer.Option(help="Neighbour slices shown on each side.")] = 1,
    instance_model: Annotated[
        int | None,
        typer.Option(
            help="A Mask R-CNN model version: also send the slices to the dataset's instance "
            "project with its particles pre-filled, one region each."
        ),
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Send a round's slices to Label Studio with the model's prediction pre-filled."""
    from tomoloop.flows.labelstudio import push_round

    run(
        lambda: push_round(round_id, context, instance_model, device),
        as_json,
        _show_push,
        children=True,
    )


def _show_push(result: dict) -> None:
    out.print(f"[green]✓[/] {result['tasks']} tasks; annotate at {result['url']}")
    if "instances" in result:
        particles = result["instances"]
        out.print(
            f"[green]✓[/] {particles['tasks']} tasks with particles; draw at {particles['url']}"
        )


def pull_command(
    dataset: DatasetOpt,
    as_json: JsonFlag = False,
) -> None:
    """Pull new annotations of a dataset's project into the registry (tier annotator), send
    the labels due for review to its review project and pull the reviews (tier expert).
    """
    from tomoloop.flows.labelstudio import sync_annotations

    run(lambda: sync_annotations(dataset), as_json, _show_pull, children=True)


def _show_pull(result: dict) -> None:
    out.print(
        f"[green]✓[/] stored {result['stored']}, skipped {result['skipped']}, "
        f"rejected {result['rejected']} (already seen {result['seen']})"
    )
    if "regions" in result:
        regions = result["regions"]
        out.print(
            f"  of which region tasks (sparse labels): stored {regions['stored']}, skipped "
            f"{regions['skipped']}, rejected {regions['rejected']}"
        )
    if "review" in result:
        review = result["review"]
        out.print(
            f"  review: sent {review['sent']}, stored {review['stored']} (tier expert), "
            f"skipped {review['skipped']}, rejected {review['rejected']}"
        )
    if "instances" in result:
        drawn = result["instances"]
        out.print(
            f"  instances: stored {drawn['stored']}, skipped {drawn['skipped']}, "
            f"rejected {drawn['rejected']} (already seen {drawn['seen']})"
        )
