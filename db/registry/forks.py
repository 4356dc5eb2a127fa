"""A registry copied whole into another database with one dataset renamed: a fork, where a
control arm runs the same loop as the original without a row of either reaching the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Engine,
    Table,
    bindparam,
    false,
    func,
    select,
    update,
)

from tomoloop.db.models import (
    Agreement,
    ALRound,
    Base,
    DatasetVersion,
    ModelVersion,
    Review,
    Volume,
)
from tomoloop.db.registry.store import _CHUNK, RegistryError
from tomoloop.db.states import ReviewState, RoundStatus
from tomoloop.names import check_name

_DOCUMENT = "document_"  # the parameter of a JSON column in a fork's insert
# every column that holds a dataset's name (a model's name is its dataset's)
DATASET_NAME_COLUMNS = (
    DatasetVersion.name,
    ModelVersion.name,
    ALRound.dataset,
    Review.dataset,
    Agreement.dataset,
)


def check_fork(source: Engine, dataset: str, name: str) -> None:
    """Refuse a fork that would not be one: ``dataset`` unknown to ``source`` or with work
    still in Label Studio (an open round, a review not answered: their tasks live in the
    original's projects, which the fork never reads), ``name`` breaking the naming rule or
    already a dataset of ``source``.

    Raises:
        RegistryError: with what to change.
        NameRuleError: ``name`` breaks :func:`tomoloop.names.check_name`'s rule.
    """
    check_name(name, "fork name")
    with source.connect() as read:
        names = set(read.scalars(select(DatasetVersion.name).distinct()))
        rounds = read.scalars(
            select(ALRound.id).where(ALRound.dataset == dataset, ALRound.status == RoundStatus.OPEN)
        ).all()
        reviews = read.scalar(
            select(func.count())
            .select_from(Review)
            .where(Review.dataset == dataset, Review.state.in_(ReviewState.open()))
        )
    if dataset not in names:
        raise RegistryError(f"no dataset {dataset!r} to fork: `tomoloop registry datasets`")
    if name in names:
        raise RegistryError(f"dataset {name!r} exists already: choose another fork name")
    if rounds or reviews:
        raise RegistryError(
            f"dataset {dataset!r} has open rounds {list(rounds)} and {reviews} unanswered "
            "reviews in Label Studio: finish them (`tomoloop pull`) before forking"
        )


def fork_rows(source: Engine, target: Engine, dataset: str, name: str) -> dict[str, int]:
    """Every row of ``source`` (one snapshot of it) copied into the empty ``target`` with
    ``dataset`` named ``name`` there (its versions, models, rounds, reviews and
    agreements), all in one transaction of ``target``; volumes, slices and labels keep
    their names and ids. ``source`` is only read; call :func:`check_fork` first. Rows
    copied per table.

    Raises:
        RegistryError: ``target`` holds rows already.
    """
    with target.connect() as read:
        if read.scalar(select(Volume.id).limit(1)) is not None:
            raise RegistryError(
                f"the fork's registry {target.url.render_as_string(hide_password=True)} "
                "holds rows already: fork into a new database"
            )
    with _snapshot(source) as read, target.begin() as write:
        tables = Base.metadata.sorted_tables  # parents before children
        copied = {table.name: _copy_table(table, read, write) for table in tables}
        for column in DATASET_NAME_COLUMNS:
            write.execute(update(column.table).where(column == dataset).values({column: name}))
        if write.dialect.name == "postgresql":
            _advance_sequences(write)
    return copied


@contextmanager
def _snapshot(source: Engine) -> Iterator[Connection]:
    """A connection reading one consistent state of ``source`` for all its statements: a
    repeatable-read transaction on PostgreSQL, a read transaction on SQLite (WAL keeps the
    snapshot while writers go on)."""
    with source.connect() as read:
        if read.dialect.name == "postgresql":
            read = read.execution_options(isolation_level="REPEATABLE READ")
            with read.begin():
                yield read
            return
        read.exec_driver_sql("BEGIN")
        try:
            yield read
        finally:
            read.exec_driver_sql("ROLLBACK")


def _copy_table(table: Table, read: Connection, write: Connection) -> int:
    """Every row of ``table`` behind ``read`` inserted through ``write`` with its id, by
    primary key; the rows copied. Values cross backends unchanged: times as UTC, a SQL
    NULL in a JSON column stays NULL (not JSON ``null``)."""
    times = [c.key for c in table.columns if isinstance(c.type, DateTime)]
    documents = [c.key for c in table.columns if isinstance(c.type, JSON)]
    insert = table.insert().values(
        {key: bindparam(f"{_DOCUMENT}{key}", type_=JSON(none_as_null=True)) for key in documents}
    )
    rows = read.execution_options(stream_results=True).execute(
        select(table).order_by(*table.primary_key.columns)
    )
    copied = 0
    for chunk in rows.mappings().partitions(_CHUNK):
        write.execute(insert, [_insertable(row, times, documents) for row in chunk])
        copied += len(chunk)
    return copied


def _insertable(row: Mapping[str, Any], times: list[str], documents: list[str]) -> dict[str, Any]:
    """``row`` as :func:`_copy_table`'s insert takes it: its ``times`` columns as UTC
    datetimes (an aware one converted — a PostgreSQL session may answer in its own zone —,
    a naive one, as SQLite stores UTC, marked UTC), its JSON ``documents`` under the names
    of their typed parameters."""
    out = dict(row)
    for key in times:
        value = out[key]
        if isinstance(value, datetime):
            out[key] = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    for key in documents:
        out[f"{_DOCUMENT}{key}"] = out.pop(key)
    return out


def _advance_sequences(write: Connection) -> None:
    """PostgreSQL's id sequences moved past the copied ids (rows inserted with their own
    ids leave a sequence where it was: the next insert would clash)."""
    for table in Base.metadata.sorted_tables:
        if "id" in table.c and table.c.id.primary_key:
            write.execute(
                select(
                    func.setval(
                        func.pg_get_serial_sequence(table.name, "id"),
                        func.coalesce(func.max(table.c.id), 0) + 1,
                        false(),
                    )
                )
            )
