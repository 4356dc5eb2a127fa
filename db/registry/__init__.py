"""The registry: one :class:`Registry` facade over one part per aggregate (in the manner of
MLflow's SQLAlchemy store, split by what the rows are about):

=================  ===============================================================
part               rows
=================  ===============================================================
``volumes``        volumes and their slices
``annotations``    labels of slices, the best label of each slice
``datasets``       dataset versions, their members, splits and pools
``model_versions`` model versions, training runs, metrics, promotion, lineage
``rounds``         active-learning rounds and their items
``reviews``        reviews and agreements
``events``         Label Studio events
``scores``         slice scores
=================  ===============================================================

Every public method is one transaction: it commits whole or not at all. Writes that
several processes may race on (a volume, a slice, an annotation, a dataset version, a
promotion) are idempotent by natural key and settled by the database's unique
constraints, not by reading first.
"""

from __future__ import annotations

from sqlalchemy import select

from tomoloop.db.engine import check_registry_place, make_engine, schema_at_head, sqlite_file
from tomoloop.db.models import Annotation, DatasetVersion, ModelVersion, TrainingRun
from tomoloop.db.registry.annotations import AnnotationStore, NewAnnotation
from tomoloop.db.registry.datasets import DatasetSlice, DatasetStore, PoolSlice
from tomoloop.db.registry.events import EventStore
from tomoloop.db.registry.forks import check_fork, fork_rows
from tomoloop.db.registry.model_versions import VOLUME_METRIC, Lineage, ModelStore, NewMetric
from tomoloop.db.registry.reviews import REVIEW_STATES, ReviewStore
from tomoloop.db.registry.rounds import RoundStore
from tomoloop.db.registry.scores import ScoreStore
from tomoloop.db.registry.store import RegistryError
from tomoloop.db.registry.volumes import VolumeStore

__all__ = [
    "ARTIFACT_KEY_COLUMNS",
    "REVIEW_STATES",
    "VOLUME_METRIC",
    "DatasetSlice",
    "Lineage",
    "NewAnnotation",
    "NewMetric",
    "PoolSlice",
    "Registry",
    "RegistryError",
]

# every column holding an artifact key (DatasetVersion.artifacts holds them in a JSON map)
ARTIFACT_KEY_COLUMNS = (Annotation.mask_uri, ModelVersion.checkpoint_uri, TrainingRun.curve_uri)


class Registry(
    VolumeStore,
    AnnotationStore,
    DatasetStore,
    ModelStore,
    RoundStore,
    ReviewStore,
    EventStore,
    ScoreStore,
):
    """Volumes, slices, annotations, dataset versions, models, rounds, reviews, events and
    scores: every part's methods on one object, sharing one session per transaction."""

    @classmethod
    def from_url(cls, url: str, create: bool = True) -> Registry:
        """The registry at ``url`` with its schema at the head revision
        (:func:`tomoloop.db.engine.schema_at_head`: the embedded SQLite file is created and
        migrated on first use).

        ``create=False`` is for commands that only read: an absent SQLite file is not
        created (nor its folder); they see an empty registry held in memory instead.
        """
        path = sqlite_file(url)
        if path is not None:
            check_registry_place(path)
        if not create and path is not None and not path.exists():
            url = "sqlite://"
        engine = make_engine(url)
        try:
            schema_at_head(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def fork(self, url: str, dataset: str, name: str) -> Registry:
        """A new registry at ``url`` (a SQLite file is created; a PostgreSQL database must be
        empty and at the head revision, ``tomoloop db upgrade``) holding every row of this
        one, with ``dataset`` named ``name`` there
        (:func:`tomoloop.db.registry.forks.fork_rows`): a loop run in the fork leaves this
        registry as it was. Nothing is created when the fork is refused, and a SQLite file
        it created is removed again when copying fails.

        Raises:
            RegistryError: ``dataset`` unknown or with work open in Label Studio, ``name``
                taken, or ``url`` holds rows (:func:`tomoloop.db.registry.forks.check_fork`).
            NameRuleError: ``name`` breaks the naming rule.
        """
        check_fork(self.engine, dataset, name)
        path = sqlite_file(url)
        created = path is not None and not path.exists()
        fork = Registry.from_url(url)
        try:
            fork_rows(self.engine, fork.engine, dataset, name)
        except BaseException:
            fork.engine.dispose()
            if created and path is not None:
                path.unlink(missing_ok=True)
            raise
        return fork

    def artifact_keys(self) -> set[str]:
        """The key of every artifact a row refers to: the :data:`ARTIFACT_KEY_COLUMNS` and
        each ``uri`` in a dataset version's ``artifacts`` map."""
        with self.session() as s:
            keys = {
                key
                for column in ARTIFACT_KEY_COLUMNS
                for key in s.scalars(select(column).where(column.is_not(None)).distinct())
            }
            for artifacts in s.scalars(select(DatasetVersion.artifacts)):
                keys.update(entry["uri"] for entry in (artifacts or {}).values())
        return keys
