"""Benchmark: the registry at scale on SQLite and PostgreSQL.

A registry of volumes × slices scored by one model (default 2,000 × 5,000 = 10,000,000
scored slices), with auto labels on 10 % of slices, annotator labels on 1 % and pending
round items on 0.5 % mixed in. Measures, on each backend, against a baseline in the same
run:
- top-K unlabelled slices (``Registry.top_unlabelled``): median and p95 of repeated calls;
  baseline = the same query with the score index disabled (SQLite ``NOT INDEXED``,
  PostgreSQL ``enable_indexscan=off``).
- bulk annotation insert (``Registry.add_annotations``): rows/s, the median of five
  batches of 200,000; baseline = the ORM way (``session.add_all`` of Annotation objects).

Run: ``.venv/bin/python bench/registry.py [--volumes 2000 --slices 5000]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

from sqlalchemy import Engine, text

from tomoloop.adapters.local_postgres import create_database, local_postgres
from tomoloop.db.engine import make_engine, upgrade
from tomoloop.db.models import Annotation, Tier
from tomoloop.db.registry import NewAnnotation, Registry

OUT = Path(__file__).resolve().parent / "out"

SERIES = {
    "sqlite": "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) "
    "SELECT i FROM n",
    "postgresql": "SELECT i FROM generate_series(0, {last}) AS i",
}
RANDOM = {"sqlite": "(abs(random()) % 1000000000) / 1e9", "postgresql": "random()"}


def populate(engine: Engine, volumes: int, slices: int) -> float:
    """Fill an empty, migrated registry; seconds taken."""
    dialect = engine.dialect.name
    n = volumes * slices
    started = time.perf_counter()
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO volumes (id, name, path, sha256, shape_z, shape_y, shape_x, dtype,"
                " modality, material, phases, created_at) VALUES (:id, :name, '/d', :sha, "
                ":z, 512, 512, 'uint16', 'xct', '', 'pore=0,nmc=1,cbd=2', CURRENT_TIMESTAMP)"
            ),
            [
                {"id": v + 1, "name": f"v{v}", "sha": f"{v:064x}", "z": slices}
                for v in range(volumes)
            ],
        )
        c.execute(
            text(
                'INSERT INTO slices (id, volume_id, axis, "index") '
                f"SELECT i + 1, i / {slices} + 1, 'z', i % {slices} FROM ("
                + SERIES[dialect].format(last=n - 1)
                + ") AS series"
            )
        )
        c.execute(
            text(
                "INSERT INTO model_versions (id, name, architecture, backend, config, stage, "
                "created_at) VALUES (1, 'unet', 'unet', 'torch', '{}', 'champion', "
                "CURRENT_TIMESTAMP)"
            )
        )
        c.execute(
            text(
                "INSERT INTO slice_scores (model_version_id, slice_id, score, method) "
                f"SELECT 1, id, {RANDOM[dialect]}, 'entropy' FROM slices"
            )
        )
        for tier, modulo, rest in ((0, 10, 0), (2, 100, 7)):
            c.execute(
                text(
                    "INSERT INTO annotations (slice_id, tier, source, author, created_at) "
                    f"SELECT id, {tier}, 'bench', '', CURRENT_TIMESTAMP FROM slices "
                    f"WHERE id % {modulo} = {rest}"
                )
            )
        c.execute(
            text(
                "INSERT INTO al_rounds (id, dataset, strategy, budget, model_version_id, status, "
                "created_at) VALUES (1, 'bench', 'entropy', 100, 1, 'open', CURRENT_TIMESTAMP)"
            )
        )
        c.execute(
            text(
                "INSERT INTO round_items (round_id, slice_id, score, rank, state) "
                "SELECT 1, id, 0.5, id, 'pending' FROM slices WHERE id % 200 = 3"
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("ANALYZE"))
    return time.perf_counter() - started


def time_top_k(registry: Registry, k: int, repeats: int) -> list[float]:
    registry.top_unlabelled(1, k)  # warm the cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        top = registry.top_unlabelled(1, k)
        times.append(time.perf_counter() - started)
    assert len(top) == k
    return times


def time_top_k_without_index(engine: Engine, k: int) -> float:
    """The top-K query's SQL with the score index switched off: the full-scan baseline."""
    dialect = engine.dialect.name
    scores = "slice_scores AS ss NOT INDEXED" if dialect == "sqlite" else "slice_scores AS ss"
    query = text(
        f"SELECT ss.slice_id, ss.score FROM {scores} WHERE ss.model_version_id = 1 "
        "AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.slice_id = ss.slice_id AND "
        "a.tier >= 2) AND NOT EXISTS (SELECT 1 FROM round_items r WHERE r.slice_id = "
        f"ss.slice_id AND r.state = 'pending') ORDER BY ss.score DESC, ss.slice_id LIMIT {k}"
    )
    with engine.connect() as c:
        if dialect == "postgresql":
            c.execute(text("SET enable_indexscan = off"))
            c.execute(text("SET enable_bitmapscan = off"))
            c.execute(text("SET enable_indexonlyscan = off"))
        started = time.perf_counter()
        rows = c.execute(query).all()
        elapsed = time.perf_counter() - started
    assert len(rows) == k
    return elapsed


def time_inserts(
    registry: Registry, rows: int, batches: int, baseline_rows: int, n_slices: int
) -> tuple[list[float], float]:
    """(rows/s of each add_annotations batch, rows/s of ORM add_all) on fresh natural keys.

    Batch b labels the ``rows`` slices after the first ``b * rows``: no batch finds its
    slices' pages warm from the one before.
    """
    mask = {"size": [512, 512], "classes": {"1": "abc"}}
    fast = []
    for b in range(batches):
        tag = uuid.uuid4().hex[:8]
        batch = [
            NewAnnotation(
                (b * rows + i) % n_slices + 1, Tier.ANNOTATOR, f"ls:{tag}/{i}", mask_rle=mask
            )
            for i in range(rows)
        ]
        started = time.perf_counter()
        added = registry.add_annotations(batch)
        fast.append(added / (time.perf_counter() - started))
    tag = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    with registry.session() as s:
        s.add_all(
            Annotation(
                slice_id=i % n_slices + 1,
                tier=int(Tier.EXPERT),
                source=f"orm:{tag}/{i}",
                mask_rle=mask,
            )
            for i in range(baseline_rows)
        )
    slow = baseline_rows / (time.perf_counter() - started)
    return fast, slow


def bench(url: str, volumes: int, slices: int, k: int) -> dict:
    engine = make_engine(url)
    upgrade(engine)
    fill = populate(engine, volumes, slices)
    registry = Registry(engine)
    times = time_top_k(registry, k, repeats=30)
    baseline = time_top_k_without_index(engine, k)
    batches, orm = time_inserts(registry, 200_000, 5, 20_000, volumes * slices)
    inserted = statistics.median(batches)
    engine.dispose()
    median = statistics.median(times)
    return {
        "backend": engine.dialect.name,
        "scored_slices": volumes * slices,
        "populate_s": fill,
        "top_k": k,
        "top_k_median_ms": 1e3 * median,
        "top_k_p95_ms": 1e3 * sorted(times)[int(0.95 * len(times)) - 1],
        "top_k_no_index_ms": 1e3 * baseline,
        "top_k_speedup": baseline / median,
        "insert_rows_per_s": inserted,
        "insert_batches_rows_per_s": batches,
        "orm_insert_rows_per_s": orm,
        "insert_speedup": inserted / orm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=2000)
    parser.add_argument("--slices", type=int, default=5000)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sqlite_file = OUT / "registry-bench.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
    results = [bench(f"sqlite:///{sqlite_file}", args.volumes, args.slices, args.k)]
    with local_postgres() as template:
        url = create_database(template, "bench")
        results.append(bench(url, args.volumes, args.slices, args.k))
    for r in results:
        print(
            f"{r['backend']:10s} {r['scored_slices']:>11,d} scored slices "
            f"(filled in {r['populate_s']:.0f} s) | top-{r['top_k']}: median "
            f"{r['top_k_median_ms']:.2f} ms, p95 {r['top_k_p95_ms']:.2f} ms, without the "
            f"index {r['top_k_no_index_ms']:.0f} ms ({r['top_k_speedup']:.0f}x) | insert "
            f"{r['insert_rows_per_s']:,.0f} rows/s (median of "
            f"{', '.join(f'{x:,.0f}' for x in r['insert_batches_rows_per_s'])}) "
            f"vs ORM {r['orm_insert_rows_per_s']:,.0f} "
            f"({r['insert_speedup']:.1f}x)"
        )
    (OUT / "registry.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
