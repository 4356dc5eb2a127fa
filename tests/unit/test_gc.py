"""Choosing what `tomoloop db gc` removes (pure functions)."""

import pytest

from tomoloop.adapters.artifacts import StoredFile
from tomoloop.db.models import Base
from tomoloop.db.registry import ARTIFACT_KEY_COLUMNS
from tomoloop.errors import TomoloopError
from tomoloop.gc import check_registry_matches, collectable, parse_duration
from tomoloop.paths import store_file_kind

SHA = "ab" + "1" * 62
KEY = f"ab/{SHA}.pt"
TMP = f"{KEY}.tmp-{'f' * 32}"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600.0), ("90s", 90.0), ("30m", 1800.0), ("1h", 3600.0), ("2D", 172800.0),
     ("0", 0.0), ("1.5h", 5400.0)],
)
def test_durations(text, seconds):
    assert parse_duration(text, "--grace") == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "1w", "h", "inf", "1e9"])
def test_bad_durations_name_the_flag(text):
    with pytest.raises(TomoloopError, match="--grace"):
        parse_duration(text, "--grace")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (KEY, "artifact"),
        (f"ab/{SHA}", "artifact"),
        (f"ab/{SHA}.tar.gz", "artifact"),
        (TMP, "temporary"),
        ("cd/" + SHA + ".pt", None),  # folder is not the sha's prefix
        ("notes.txt", None),
        (f"ab/{SHA}.pt~", None),
        (f"x/ab/{SHA}.pt", None),
        (f"ab/{SHA[:-1]}.pt", None),
    ],
)
def test_store_file_kind(name, kind):
    assert store_file_kind(name) == kind


def test_collectable_takes_old_unreferenced_and_leftovers_only():
    other = f"cd/cd{'2' * 62}.png"
    files = [
        StoredFile(KEY, 10, 0.0),  # old, referenced
        StoredFile(TMP, 3, 0.0),  # old leftover
        StoredFile(other, 5, 0.0),  # old orphan
        StoredFile(f"ef/ef{'3' * 62}.pt", 7, 990.0),  # fresh orphan
        StoredFile("notes.txt", 1, 0.0),  # not the store's
    ]
    chosen = collectable(files, {KEY}, now=1000.0, grace_s=60.0)
    assert [f.key for f in chosen] == [TMP, other]


def test_registry_that_refers_to_nothing_may_remove_only_leftovers():
    check_registry_matches(set(), [StoredFile(TMP, 3, 0.0)])
    check_registry_matches({KEY}, [StoredFile(f"cd/cd{'2' * 62}", 5, 0.0)])
    with pytest.raises(TomoloopError, match="TOMOLOOP_DATABASE_URL"):
        check_registry_matches(set(), [StoredFile(KEY, 10, 0.0)])


def test_every_uri_column_is_read_as_an_artifact_reference():
    """A new *_uri column must join ARTIFACT_KEY_COLUMNS, or gc would take its files."""
    uri_columns = {
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if column.name.endswith("_uri") or column.name == "artifacts"
    }
    known = {f"{c.table.name}.{c.name}" for c in ARTIFACT_KEY_COLUMNS}
    assert uri_columns == known | {"dataset_versions.artifacts"}
