"""A registry copied whole into another database with one dataset renamed: a fork, where a
control arm runs the same loop as the original without a row of either reaching the other.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, false, func, select, update

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
from tomoloop.names import check_name

# every column that holds a dataset's name (a model's name is its dataset's)
DATASET_NAME_COLUMNS = (
    DatasetVersion.name,
    ModelVersion.name,
    ALRound.dataset,
    Review.dataset,
    Agreement.dataset,
)


def _copy_rows(read: Connection, write: Connection) -> dict[str, int]:
    """Every row of every registry table behind ``read`` inserted through ``write`` (same
    ids), parents before children; rows copied per table. Either backend to either: values
    go through the ORM's column types."""
    copied = {}
    for table in Base.metadata.sorted_tables:
        rows = read.execution_options(stream_results=True).execute(
            select(table).order_by(*table.primary_key.columns)
        )
        copied[table.name] = 0
        for chunk in rows.mappings().partitions(_CHUNK):
            write.execute(table.insert(), [dict(row) for row in chunk])
            copied[table.name] += len(chunk)
    return copied


def check_fork(source: Engine, dataset: str, name: str) -> None:
    """Refuse a fork that would not be one: ``dataset`` unknown to ``source``, ``name``
    breaking the naming rule or already a dataset of ``source``.

    Raises:
        RegistryError: with what to change.
        NameRuleError: ``name`` breaks :func:`tomoloop.names.check_name`'s rule.
    """
    check_name(name, "fork name")
    with source.connect() as read:
        names = set(read.scalars(select(DatasetVersion.name).distinct()))
    if dataset not in names:
        raise RegistryError(f"no dataset {dataset!r} to fork: `tomoloop registry datasets`")
    if name in names:
        raise RegistryError(f"dataset {name!r} exists already: choose another fork name")


def fork_rows(source: Engine, target: Engine, dataset: str, name: str) -> dict[str, int]:
    """:func:`check_fork`, then every row of ``source`` copied into the empty ``target``
    with ``dataset`` named ``name`` there (its versions, models, rounds, reviews and
    agreements); volumes, slices and labels keep their names and ids. ``source`` is only
    read. Rows copied per table.

    Raises:
        RegistryError: :func:`check_fork`'s, or ``target`` holds rows already.
    """
    check_fork(source, dataset, name)
    with target.connect() as read:
        if read.scalar(select(Volume.id).limit(1)) is not None:
            raise RegistryError(
                f"the fork's registry {target.url.render_as_string(hide_password=True)} "
                "holds rows already: fork into a new database"
            )
    with source.connect() as read, target.begin() as write:  # all of it, or nothing
        copied = _copy_rows(read, write)
        for column in DATASET_NAME_COLUMNS:
            write.execute(update(column.table).where(column == dataset).values({column: name}))
        if write.dialect.name == "postgresql":
            _advance_sequences(write)
    return copied


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
