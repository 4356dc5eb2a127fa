"""``tomoloop db``: the registry's schema (migrations) and unreferenced artifacts."""

from typing import TYPE_CHECKING, Annotated

import typer

from tomoloop.cli.lookup import open_registry, registry_engine
from tomoloop.cli.options import JsonFlag
from tomoloop.cli.output import out
from tomoloop.cli.runner import run

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

db_app = typer.Typer(
    help="The SQL registry's schema (TOMOLOOP_DATABASE_URL) and unreferenced artifacts.",
    no_args_is_help=True,
)


def _migrate(step: "Callable[[Engine, str], None]", revision: str, as_json: bool) -> None:
    """Migrate the registry to ``revision`` with ``step`` (upgrade or downgrade), then
    report where it is."""
    from tomoloop.db.engine import check_revision

    check_revision(revision)
    engine = registry_engine()
    _report_revision(engine, as_json, lambda: step(engine, revision))


def _report_revision(
    engine: "Engine", as_json: bool, step: "Callable[[], None] | None" = None
) -> None:
    """Run ``step`` (a migration), then print the registry's URL (no password) and revision."""
    from tomoloop.db.engine import current_revision

    def work() -> dict:
        if step is not None:
            step()
        return {
            "url": engine.url.render_as_string(hide_password=True),
            "revision": current_revision(engine),
        }

    run(work, as_json, _show_revision)


def _show_revision(result: dict) -> None:
    out.print(f"registry {result['url']} at revision {result['revision'] or '(empty)'}")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    as_json: JsonFlag = False,
) -> None:
    """Create or migrate the registry schema up to a revision."""
    from tomoloop.db.engine import upgrade

    _migrate(upgrade, revision, as_json)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Option(help="Target revision (-1: one step).")] = "-1",
    as_json: JsonFlag = False,
) -> None:
    """Migrate the registry schema down (default one step)."""
    from tomoloop.db.engine import downgrade

    _migrate(downgrade, revision, as_json)


@db_app.command("current")
def db_current(as_json: JsonFlag = False) -> None:
    """The registry's schema revision (an embedded registry not created yet: none)."""
    from tomoloop.config import Settings
    from tomoloop.db.engine import check_registry_place, sqlite_file

    url = Settings().registry_url
    path = sqlite_file(url)
    if path is None or path.exists():
        _report_revision(registry_engine(), as_json)
        return

    def absent() -> dict:
        check_registry_place(path)
        return {"url": url, "revision": None}

    run(absent, as_json, _show_revision)


@db_app.command("gc")
def db_gc(
    grace: Annotated[
        str, typer.Option(help="Keep files modified less than this long ago (90s, 30m, 1h, 2d).")
    ] = "1h",
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove them (default: only list them).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """List (or with --delete remove) artifacts no registry row refers to and temporary
    leftovers of killed writes, older than --grace."""
    import time

    from tomoloop.adapters.artifacts import ArtifactStore
    from tomoloop.config import Settings
    from tomoloop.gc import check_registry_matches, collectable, parse_duration

    grace_s = parse_duration(grace, "--grace")
    store = ArtifactStore(Settings().artifact_root)

    def work() -> list:
        # listed before the references are read: a file stored later is not listed, one
        # committed later is read as referenced
        files = store.entries()
        referenced = open_registry().artifact_keys()
        chosen = collectable(files, referenced, time.time(), grace_s)
        if delete:
            check_registry_matches(referenced, chosen)
            for stored in chosen:
                store.remove(stored.key)
        return chosen

    def document(chosen: list) -> dict:
        rows = [{"key": f.key, "bytes": f.size, "mtime": f.mtime} for f in chosen]
        return {"removed" if delete else "would_remove": rows, "bytes": sum(f.size for f in chosen)}

    def show(chosen: list) -> None:
        for stored in chosen:
            out.print(f"{stored.key}  {stored.size:,} B", highlight=False, soft_wrap=True)
        verb = "removed" if delete else "would remove"
        hint = "" if delete or not chosen else "; run again with --delete to remove them"
        out.print(
            f"{verb} {len(chosen)} unreferenced file(s), {sum(f.size for f in chosen):,} bytes, "
            f"older than {grace} from {store.url}{hint}",
            highlight=False,
            soft_wrap=True,
        )

    run(work, as_json, show, document=document)
