"""``tomoloop registry``: read the registry (and freeze a dataset's next version)."""

from dataclasses import asdict
from functools import partial
from typing import Annotated

import typer

from tomoloop.cli.lookup import find_dataset, int_ref, open_registry
from tomoloop.cli.options import DatasetOpt, JsonFlag
from tomoloop.cli.output import print_rows
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError

registry_app = typer.Typer(help="Query the registry (read-only).", no_args_is_help=True)


@registry_app.command("volumes")
def registry_volumes(as_json: JsonFlag = False) -> None:
    """Registered volumes."""
    from tomoloop.db.views import volume_row

    run(
        lambda: [volume_row(v) for v in open_registry().volumes()],
        as_json,
        partial(print_rows, "volumes"),
    )


@registry_app.command("datasets")
def registry_datasets(as_json: JsonFlag = False) -> None:
    """Dataset versions with their annotation counts per split and tier, and the pixels
    their labels label per split."""
    from tomoloop.db.views import dataset_row

    def work() -> list[dict]:
        registry = open_registry()
        return [dataset_row(registry, d) for d in registry.datasets()]

    run(work, as_json, partial(print_rows, "datasets"))


@registry_app.command("refresh")
def registry_refresh(
    dataset: DatasetOpt,
    as_json: JsonFlag = False,
) -> None:
    """Freeze the next version of a dataset: its slices and splits, each slice with its
    best labels now (pulled corrections, reviews, drawn particles); the latest version
    when nothing changed."""
    from tomoloop.db.views import dataset_row

    def work() -> list[dict]:
        registry = open_registry(create=True)
        return [dataset_row(registry, registry.refresh_dataset(dataset))]

    run(work, as_json, partial(print_rows, "datasets"))


@registry_app.command("models")
def registry_models(as_json: JsonFlag = False) -> None:
    """Model versions with stage, training data and metrics."""
    from tomoloop.db.views import model_row

    def work() -> list[dict]:
        registry = open_registry()
        return [model_row(registry, m) for m in registry.models()]

    run(work, as_json, partial(print_rows, "models"))


@registry_app.command("rounds")
def registry_rounds(as_json: JsonFlag = False) -> None:
    """Active-learning rounds with their items per state and the pixels labelled in each
    (a region round's budget is in pixels)."""
    from tomoloop.db.views import round_rows

    run(lambda: round_rows(open_registry()), as_json, partial(print_rows, "rounds"))


@registry_app.command("runs")
def registry_runs(as_json: JsonFlag = False) -> None:
    """Training runs; a ``running`` one whose process is gone (killed: same host and its
    pid dead or reused, or no heartbeat for 10 min from another host) is marked
    ``failed`` first, with the reason."""
    from tomoloop.db.views import run_row
    from tomoloop.processes import gone_reason

    def work() -> list[dict]:
        registry = open_registry()
        registry.fail_gone_runs(gone_reason)
        return [run_row(r) for r in registry.runs()]

    run(work, as_json, partial(print_rows, "runs"))


@registry_app.command("show")
def registry_show(
    kind: Annotated[str, typer.Argument(help="volume, dataset or model.")],
    ref: Annotated[str, typer.Argument(help="An id; for datasets also NAME or NAME@VERSION.")],
    as_json: JsonFlag = False,
) -> None:
    """One volume, dataset version or model version."""
    from tomoloop.db.views import dataset_row, model_row, volume_row

    def work() -> list[dict]:
        registry = open_registry()
        if kind == "volume":
            return [volume_row(registry.volume(int_ref(ref)))]
        if kind == "dataset":
            found = (
                registry.dataset_version(int(ref)) if ref.isdigit() else find_dataset(registry, ref)
            )
            return [dataset_row(registry, found)]
        if kind == "model":
            return [model_row(registry, registry.model(int_ref(ref)))]
        raise TomoloopError(f"registry show {kind!r}: use volume, dataset or model")

    run(work, as_json, partial(print_rows, kind))


@registry_app.command("lineage")
def registry_lineage(
    model_id: Annotated[int, typer.Argument(help="Model version id.")],
    as_json: JsonFlag = False,
) -> None:
    """Where a model came from: ancestors, dataset version, labels by tier, volumes."""
    run(
        lambda: [asdict(open_registry().lineage(model_id))],
        as_json,
        partial(print_rows, "lineage"),
    )
