"""`Registry.fork`: a registry copied whole into another database, one dataset renamed; the
demo's random control runs its loop there. Both backends as the source, both as the fork."""

import uuid

import pytest
from sqlalchemy import func, select

from tomoloop.db.models import Base
from tomoloop.db.registry import NewAnnotation, Registry, RegistryError
from tomoloop.labels.tiers import Tier
from tomoloop.names import NameRuleError

pytestmark = pytest.mark.integration


def _populated(url: str) -> Registry:
    """A registry with two datasets; ``nmc`` has two versions, a champion, a candidate
    child of it, an annotation made by the champion and an open region round."""
    registry = Registry.from_url(url)
    volume = registry.register_volume(
        "scan-1", "/data/scan-1.tif", "a" * 64, (4, 8, 8), "uint8", "pore=0,nmc=1"
    )
    slices = registry.register_slices(volume, "z", range(4))
    rough = [
        NewAnnotation(s, Tier.AUTO, "rough", mask_uri=f"{s}.json", labelled_px=64)
        for s in slices.values()
    ]
    registry.add_annotations(rough)
    ids = [registry.annotation_id(s, Tier.AUTO, "rough") for s in slices.values()]
    first = registry.freeze_dataset("nmc", {"train": ids[:2], "val": ids[2:3], "test": ids[3:]})
    champion = registry.register_model("nmc", "unet", "torch", first.id, checkpoint_uri="m1.pt")
    registry.promote(champion)
    painted = NewAnnotation(
        slices[0], Tier.ANNOTATOR, "ls", mask_uri="a.json", labelled_px=16,
        model_version_id=champion,
    )  # fmt: skip
    registry.add_annotations([painted])
    painted = registry.annotation_id(slices[0], Tier.ANNOTATOR, "ls")
    second = registry.freeze_dataset(
        "nmc", {"train": [painted, ids[1]], "val": ids[2:3], "test": ids[3:]}
    )
    registry.register_model("nmc", "unet", "torch", second.id, parent_id=champion)
    registry.open_round("nmc", "bald", champion, [(slices[1], 0.5)], 16, {slices[1]: (0, 0, 4)})
    registry.freeze_dataset("other", {"train": ids[:1]})
    return registry


def _counts(registry: Registry) -> dict[str, int]:
    with registry.engine.connect() as read:
        return {
            t.name: read.scalar(select(func.count()).select_from(t))
            for t in Base.metadata.sorted_tables
        }


def _check_fork(source: Registry, fork: Registry) -> None:
    """The fork holds every row of the source, ``nmc`` named ``nmc-random`` there, and what
    happens in the fork afterwards never reaches the source."""
    assert _counts(fork) == _counts(source)
    for version in (1, 2):
        old, new = source.dataset("nmc", version), fork.dataset("nmc-random", version)
        assert (new.id, new.content_hash) == (old.id, old.content_hash)
        assert fork.dataset_slices(new.id) == source.dataset_slices(old.id)
    assert fork.champion("nmc-random").id == source.champion("nmc").id
    assert [m.name for m in fork.models()] == ["nmc-random", "nmc-random"]
    ((round_, _),) = fork.rounds()
    assert round_.dataset == "nmc-random" and fork.open_rounds("nmc-random") == [round_.id]
    assert fork.dataset("other").id == source.dataset("other").id
    with pytest.raises(RegistryError, match="no dataset 'nmc'"):
        fork.dataset("nmc")
    # the fork goes on by itself: new ids follow the copied ones, the source sees nothing
    third = fork.freeze_dataset("nmc-random", {"train": [1]})
    assert third.version == 3 and third.id == max(d.id for d in source.datasets()) + 1
    model = fork.register_model("nmc-random", "unet", "torch", third.id)
    fork.promote(model)
    assert model == max(m.id for m in source.models()) + 1
    assert source.champion("nmc").id != model and len(source.datasets()) == 3
    with pytest.raises(RegistryError, match="no dataset 'nmc-random'"):
        source.dataset("nmc-random")


def test_a_fork_holds_every_row_under_the_new_name_and_goes_its_own_way(registry_url, tmp_path):
    source = _populated(registry_url)
    fork = source.fork(f"sqlite:///{tmp_path / 'fork' / 'registry.sqlite'}", "nmc", "nmc-random")
    _check_fork(source, fork)


def test_a_fork_into_postgresql_moves_its_id_sequences_past_the_copied_rows(
    tmp_path, postgres_server
):
    from tomoloop.adapters.local_postgres import create_database, drop_database
    from tomoloop.db.engine import make_engine, upgrade

    source = _populated(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_server, name)
    upgrade(make_engine(url))  # a server registry is migrated by `tomoloop db upgrade`
    fork = source.fork(url, "nmc", "nmc-random")
    try:
        _check_fork(source, fork)
    finally:
        fork.engine.dispose()
        drop_database(postgres_server, name)


def test_a_fork_is_refused_before_anything_is_created(registry_url, tmp_path):
    source = _populated(registry_url)
    path = tmp_path / "fork.sqlite"
    refusals = [
        ("nope", "nmc-random", RegistryError, "no dataset 'nope' to fork"),
        ("nmc", "other", RegistryError, "dataset 'other' exists already"),
        ("nmc", "nmc@2", NameRuleError, "fork name"),
    ]
    for dataset, name, error, message in refusals:
        with pytest.raises(error, match=message):
            source.fork(f"sqlite:///{path}", dataset, name)
        assert not path.exists()
    taken = f"sqlite:///{tmp_path / 'taken.sqlite'}"
    _populated(taken)
    with pytest.raises(RegistryError, match="holds rows already: fork into a new database"):
        source.fork(taken, "nmc", "nmc-random")
    assert _counts(Registry.from_url(taken)) == _counts(source)


def test_every_column_holding_a_dataset_name_is_renamed_by_a_fork():
    """A new table with a ``dataset`` column must join ``DATASET_NAME_COLUMNS``, or a fork
    would leave its rows under the original's name."""
    from tomoloop.db.registry.forks import DATASET_NAME_COLUMNS

    named = {
        f"{c.table.name}.{c.name}"
        for t in Base.metadata.sorted_tables
        for c in t.columns
        if c.name == "dataset"
    }
    renamed = {f"{c.table.name}.{c.name}" for c in DATASET_NAME_COLUMNS}
    assert named | {"dataset_versions.name", "model_versions.name"} == renamed
