"""Benchmark: a burst of Label Studio webhook events against tomoloop's HTTP app.

On each backend (SQLite file, real PostgreSQL) a registry holds one 64 × 128 × 128
volume with its auto labels. ``--events`` distinct ANNOTATION_CREATED bodies (one per
annotation, brush RLE of a 128 × 128 three-phase mask, spread over the 64 slices), plus
``--repeats`` of them delivered again (Label Studio re-delivers on timeouts), are posted
in shuffled order by ``--concurrency`` clients over loopback to the app served by uvicorn
in its own process. Checked afterwards: every event recorded exactly once (events,
annotator annotations and "stored" answers all equal ``--events``; every repeat answered
"seen"); the script exits 1 otherwise.

Figures: events/s over HTTP, request latency p50/p95; baseline measured in the same run =
the same events handled in-process, one after another, by the function the webhook calls
(``handle_annotation``), on a fresh registry of the same backend — the ratio is what the
HTTP app, its worker threads and concurrency cost or gain.

Also: decoding one brush region (a 1000² particle mask and smaller), tomoloop's decoder vs
the SDK's ``decode_rle`` (the baseline), same input, outputs checked equal.

Run: ``.venv/bin/python bench/webhooks.py [--events 500 --repeats 100 --concurrency 32
--workers 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import func, select

from tomoloop.adapters.labelstudio_registry import project_title
from tomoloop.adapters.local_postgres import create_database, local_postgres
from tomoloop.db.engine import make_engine, upgrade
from tomoloop.db.models import Annotation, Tier
from tomoloop.db.registry import NewAnnotation, Registry
from tomoloop.labels.masks import encode_class_mask
from tomoloop.labels.phases import PhaseMap
from tomoloop.labels.studio_json import brush_results
from tomoloop.labels.synthetic import make_electrode

OUT = Path(__file__).resolve().parent / "out"
PHASES = "pore=0,nmc=1,cbd=2"
DATASET = "burst"
SECRET = "bench-secret"
SHAPE = (64, 128, 128)


def prepare(url: str, labels: np.ndarray) -> dict[int, int]:
    """Migrate an empty registry, register the volume with its auto labels and freeze the
    dataset; slice index → slice id.
    """
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    registry = Registry.from_url(url)
    volume = registry.register_volume(
        "burst", "/bench/burst.tif", "b" * 64, labels.shape, "uint8", PHASES
    )
    slices = registry.register_slices(volume, "z", range(labels.shape[0]))
    registry.add_annotations(
        [
            NewAnnotation(slices[z], Tier.AUTO, "bench", mask_rle=encode_class_mask(labels[z]))
            for z in range(labels.shape[0])
        ]
    )
    ids = [registry.annotation_id(slices[z], Tier.AUTO, "bench") for z in range(labels.shape[0])]
    registry.freeze_dataset(DATASET, {"train": ids})
    registry.engine.dispose()
    return slices


def bodies(labels: np.ndarray, slices: dict[int, int], n: int, names: tuple) -> list[dict]:
    """``n`` distinct webhook bodies: annotation k corrects slice k mod depth."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(1, n + 1):
        z = k % labels.shape[0]
        mask = labels[z].copy()
        y, x = rng.integers(0, labels.shape[1] - 8, size=2)
        mask[y : y + 8, x : x + 8] = rng.integers(0, 3)  # an annotator's local correction
        out.append(
            {
                "action": "ANNOTATION_CREATED",
                "annotation": {
                    "id": k,
                    "result": brush_results(mask, names),
                    "lead_time": 12.5,
                    "completed_by": 1,
                    "updated_at": f"2026-11-30T03:00:{k % 60:02d}.{k:06d}Z",
                },
                "task": {"id": k, "data": {"key": f"slice-{slices[z]}:round-1"}},
                "project": {"id": 1, "title": project_title(DATASET)},
            }
        )
    return out


def baseline(url: str, events: list[dict], names: tuple) -> float:
    """Events/s handled in-process, one after another."""
    from tomoloop.adapters.http import pulled_from_payload
    from tomoloop.adapters.labelstudio_registry import Intake, handle_annotation

    registry = Registry.from_url(url)
    started = time.perf_counter()
    for body in events:
        project, _, pulled = pulled_from_payload(body)
        assert (
            handle_annotation(registry, Intake(DATASET, names, project), pulled, "webhook")
            == "stored"
        )
    seconds = time.perf_counter() - started
    registry.engine.dispose()
    return len(events) / seconds


def decode_figures(labels: np.ndarray) -> list[dict]:
    """ms per brush region decoded, tomoloop vs the SDK, for square masks of the particle
    phase of ``labels[0]`` scaled up to 128, 512 and 1000 pixels a side.
    """
    from label_studio_sdk.converter import brush

    from tomoloop.labels.studio_json import decode_brush_rle

    figures = []
    for side in (128, 512, 1000):
        scale = -(-side // labels.shape[1])
        grown = np.kron(labels[0], np.ones((scale, scale), np.uint8))[:side, :side]
        rle = brush.mask2rle(np.where(grown == 1, 255, 0).astype(np.uint8))
        timings = {}
        for name, decode in (("tomoloop", decode_brush_rle), ("sdk", brush.decode_rle)):
            started = time.perf_counter()
            decoded = decode(rle)
            timings[name] = 1000 * (time.perf_counter() - started)
        assert np.array_equal(decoded, decode_brush_rle(rle))
        figures.append({"side": side, "tomoloop_ms": timings["tomoloop"], "sdk_ms": timings["sdk"]})
    return figures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(url: str, home: Path, workers: int) -> tuple[subprocess.Popen, str]:
    """The HTTP app served by uvicorn (``workers`` processes); (process, base URL) once it
    answers.
    """
    port = _free_port()
    env = {
        **os.environ,
        "TOMOLOOP_DATABASE_URL": url,
        "TOMOLOOP_WEBHOOK_SECRET": SECRET,
        "TOMOLOOP_HOME": str(home),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "tomoloop.adapters.http:create_app"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the HTTP app did not start within 60 s")


async def burst(base: str, requests: list[dict], concurrency: int) -> tuple[list, list, float]:
    """Post every body; (statuses, latencies in s, wall seconds)."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def post(body: dict) -> tuple[str, float]:
            async with gate:
                started = time.perf_counter()
                answer = await client.post(
                    "/webhooks/labelstudio", json=body, headers={"X-Tomoloop-Secret": SECRET}
                )
                answer.raise_for_status()
                return answer.json()["status"], time.perf_counter() - started

        started = time.perf_counter()
        done = await asyncio.gather(*(post(b) for b in requests))
        wall = time.perf_counter() - started
    return [s for s, _ in done], [t for _, t in done], wall


def run(backend: str, urls: tuple[str, str], home: Path, args: argparse.Namespace) -> dict:
    labels = make_electrode(SHAPE, seed=0).labels
    names = PhaseMap.parse(PHASES).names
    http_url, direct_url = urls
    slices = prepare(http_url, labels)
    prepare(direct_url, labels)
    events = bodies(labels, slices, args.events, names)
    direct = baseline(direct_url, events, names)
    requests = events + random.Random(1).sample(events, args.repeats)
    random.Random(2).shuffle(requests)
    process, base = serve(http_url, home, args.workers)
    try:
        statuses, latencies, wall = asyncio.run(burst(base, requests, args.concurrency))
    finally:
        process.terminate()
        process.wait(30)
    registry = Registry.from_url(http_url)
    recorded = registry.ls_events()
    with registry.session() as session:
        annotator = session.scalar(
            select(func.count()).select_from(Annotation).where(Annotation.tier == Tier.ANNOTATOR)
        )
    registry.engine.dispose()
    exact = (
        statuses.count("stored") == args.events
        and statuses.count("seen") == args.repeats
        and len(recorded) == args.events
        and len({e.key for e in recorded}) == args.events
        and annotator == args.events
    )
    latencies.sort()
    return {
        "backend": backend,
        "requests": len(requests),
        "distinct_events": args.events,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "events_recorded": len(recorded),
        "annotator_annotations": annotator,
        "exactly_once": exact,
        "http_events_per_s": len(requests) / wall,
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "latency_p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "direct_events_per_s": direct,
        "http_vs_direct": len(requests) / wall / direct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    decoding = decode_figures(make_electrode(SHAPE, seed=0).labels)
    for d in decoding:
        print(
            f"brush region {d['side']}²: decode {d['tomoloop_ms']:.1f} ms vs SDK "
            f"{d['sdk_ms']:.1f} ms ({d['sdk_ms'] / d['tomoloop_ms']:.1f}x faster)"
        )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        sqlite = (f"sqlite:///{home / 'http.sqlite'}", f"sqlite:///{home / 'direct.sqlite'}")
        results.append(run("sqlite", sqlite, home, args))
        with local_postgres() as template:
            pg = (create_database(template, "burst_http"), create_database(template, "burst_d"))
            results.append(run("postgresql", pg, home, args))
    for r in results:
        print(
            f"{r['backend']:10s} {r['requests']} requests ({r['distinct_events']} events + "
            f"{r['requests'] - r['distinct_events']} re-deliveries), {r['concurrency']} clients, "
            f"{r['workers']} worker(s): "
            f"{r['http_events_per_s']:.0f} events/s, p50 {r['latency_p50_ms']:.0f} ms, p95 "
            f"{r['latency_p95_ms']:.0f} ms | in-process baseline {r['direct_events_per_s']:.0f} "
            f"events/s ({r['http_vs_direct']:.2f}x) | recorded {r['events_recorded']}, "
            f"annotator labels {r['annotator_annotations']}: "
            f"{'exactly once' if r['exactly_once'] else 'NOT exactly once'}"
        )
    (OUT / "webhooks.json").write_text(json.dumps({"burst": results, "decode": decoding}, indent=2))
    if not all(r["exactly_once"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
