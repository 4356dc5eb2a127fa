"""``tomoloop review``: the review tier, labels a second person approves or corrects."""

import typer

from tomoloop.cli.lookup import open_registry
from tomoloop.cli.options import DatasetOpt, JsonFlag
from tomoloop.cli.output import out, print_rows
from tomoloop.cli.runner import run

review_app = typer.Typer(
    help="The review tier: labels a second person approves or corrects.", no_args_is_help=True
)


@review_app.command("status")
def review_status(
    dataset: DatasetOpt,
    as_json: JsonFlag = False,
) -> None:
    """Reviews of a dataset by state and reason, and inter-annotator agreement (mean Dice
    per phase: between annotators of one task, and annotator vs reviewer).
    """
    from tomoloop.db.views import review_row
    from tomoloop.labels.phases import PhaseMap

    def work() -> tuple[tuple[str, ...], dict]:
        registry = open_registry()
        names = PhaseMap.parse(registry.dataset_phases(registry.dataset(dataset).id)).names
        summary = registry.review_summary(dataset)
        reviews = [review_row(r) for r in registry.reviews(dataset)]
        return tuple(names), {**summary, "reviews": reviews}

    run(
        work,
        as_json,
        lambda found: _show_reviews(dataset, *found),
        document=lambda found: found[1],
    )


def _show_reviews(dataset: str, names: tuple[str, ...], document: dict) -> None:
    from rich.table import Table

    from tomoloop.active.review import AGREEMENT_KINDS
    from tomoloop.db.states import ReviewState

    states = ", ".join(f"{n} {state}" for state, n in document["states"].items())
    reasons = ", ".join(f"{n} {why}" for why, n in document["reasons"].items()) or "none"
    out.print(f"[bold]{dataset}[/] reviews: {states}; reasons: {reasons}")
    table = Table("agreement (mean Dice)", *names)
    for kind, label in AGREEMENT_KINDS.items():
        row = document["agreement"][kind]
        table.add_row(
            label,
            *(f"{row[n]['dice']:.3f} ({row[n]['pairs']})" if n in row else "–" for n in names),
        )
    out.print(table)
    print_rows("reviews", [r for r in document["reviews"] if r["state"] != ReviewState.SUPERSEDED])
