"""Prediction and scoring of a registered volume as Prefect tasks on a Dask cluster.

The volume is cut into z-chunks of ``chunk`` slices; each chunk is one Prefect task run
by a Dask worker (prefect-dask's ``DaskTaskRunner``): it reads its slices from the TIFF
(lazily, page by page), predicts and scores them exactly as the single-process path does
(:func:`tomoloop.active.uncertainty_map` on slices normalised by the volume's window)
and writes its block of the zarr arrays ``labels`` (uint8) and ``uncertainty`` (float16,
the method's per-voxel map) — chunk-aligned, so no two workers touch one zarr chunk. The
flow then records the slice scores in the registry, as ``tomoloop score`` does.

Workers need to read the stack's path and write ``out`` (shared storage on a cluster) and
to reach the artifact store the flow names (its URL travels with each task; on S3 the
workers need the bucket's credentials), not the registry: a worker loads the verified
checkpoint once and keeps it, on its own device (``auto``: its GPU when it has one).
``scheduler=None`` starts a ``distributed.LocalCluster`` of ``workers`` processes; any
``tcp://host:8786`` scheduler address runs the same tasks on that cluster.
"""

from __future__ import annotations

import functools
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import zarr
from prefect import flow, get_run_logger, task
from prefect.futures import wait
from prefect_dask import DaskTaskRunner

from tomoloop.active.scoring import ScoreOptions, SliceFeatures, features_of, uncertainty_map
from tomoloop.errors import TomoloopError
from tomoloop.inference.predict import normalise
from tomoloop.outputs import check_new
from tomoloop.services import (
    Services,
    VolumeScoring,
    record_volume_scores,
    stack_view,
    stored_network,
    volume_scoring,
)
from tomoloop.stacks.opener import open_stack
from tomoloop.stacks.window import Window
from tomoloop.training.trainer import resolve_device


@functools.lru_cache(maxsize=2)
def _worker_model(artifacts: str, key: str, sha256: str, device: str) -> torch.nn.Module:
    """The checkpoint's network, loaded once per worker process (verified by sha256)."""
    return stored_network(artifacts, key, sha256, device)


@task(name="predict-chunk", retries=1, retry_delay_seconds=5)
def predict_chunk(
    checkpoint: tuple[str, str, str],
    gray: str,
    window: Window,
    options: ScoreOptions,
    z_range: tuple[int, int],
    out: str,
    device: str,
) -> dict[int, SliceFeatures]:
    """Predict and score z slices ``z_range`` (start, stop) into the zarr group ``out``
    on this worker's ``device`` (auto: its GPU when it has one); each slice's features by
    index. Re-running it rewrites the same block with the same values (idempotent).
    """
    options = replace(options, device=resolve_device(device))
    model = _worker_model(*checkpoint, str(options.device))
    group = zarr.open_group(out, mode="r+")
    start, stop = z_range
    labels = np.zeros((stop - start, *group["labels"].shape[1:]), np.uint8)
    unsure_maps = np.zeros(labels.shape, np.float16)
    features = {}
    with open_stack(gray) as stack:
        for index, image in stack.iter_slices("z", range(start, stop)):
            unsure, probs = uncertainty_map(model, normalise(image, window), options)
            labels[index - start], unsure_maps[index - start] = probs.argmax(axis=0), unsure
            features[index] = features_of(unsure, probs, options)
    group["labels"][start:stop] = labels
    group["uncertainty"][start:stop] = unsure_maps
    return features


def task_runner(scheduler: str | None, workers: int) -> DaskTaskRunner:
    """A Dask task runner on ``scheduler`` (an address), or on a new local cluster of
    ``workers`` single-threaded processes."""
    if scheduler:
        return DaskTaskRunner(address=scheduler)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True}
    )


def chunks(depth: int, chunk: int) -> list[tuple[int, int]]:
    """(start, stop) z ranges of ``chunk`` slices covering ``depth`` slices."""
    if chunk < 1:
        raise TomoloopError(f"--chunk {chunk}: give at least one slice per task")
    return [(z, min(z + chunk, depth)) for z in range(0, depth, chunk)]


@flow(name="predict-distributed")
def predict_distributed(
    model_id: int,
    volume: str,
    out: str,
    method: str = "entropy",
    aggregation: str = "mean",
    passes: int = 8,
    chunk: int = 8,
    device: str = "auto",
) -> dict:
    """Labels and uncertainty of every z slice of registered volume ``volume`` as the zarr
    group ``out`` (written beside it under a temporary name, renamed when complete), and
    the slice scores in the registry. Run it with :func:`run_distributed` to choose the
    cluster. With entropy or margin the labels, uncertainty and scores are those of
    ``tomoloop predict`` and ``tomoloop score``; tta and ensemble label by their mean
    probabilities (scores as ``tomoloop score``), bald draws its dropout masks per worker.
    """
    target = Path(out)
    check_new(target)
    with Services.from_settings() as services:
        job = volume_scoring(services, model_id, volume, method, aggregation, passes)
        version = job.model.version
        checkpoint = (
            services.settings.artifact_root,
            version.checkpoint_uri,
            version.checkpoint_sha256,
        )
        features, tasks = _predict_chunks(checkpoint, job, target, chunk, device)
        scores = {i: f.score for i, f in sorted(features.items())}
        record_volume_scores(services, model_id, job.volume, "z", scores, job.options.label)
    get_run_logger().info("%s: %d slices in %d tasks → %s", volume, len(features), tasks, target)
    return {
        "model_version": model_id,
        "volume": volume,
        "out": str(target),
        "method": job.options.label,
        "slices": len(features),
        "tasks": tasks,
        "scores": scores,
    }


def _predict_chunks(
    checkpoint: tuple[str, str, str],
    job: VolumeScoring,
    target: Path,
    chunk: int,
    device: str,
) -> tuple[dict[int, SliceFeatures], int]:
    """Every ``chunk`` z slices of the job's volume as one :func:`predict_chunk` task,
    written into a zarr group beside ``target`` and renamed to it once every task is done
    (removed if any fails); each slice's features by index, and the number of tasks."""
    view = stack_view(job.volume.path)
    shape, ranges, futures = view.shape, chunks(view.shape[0], chunk), []
    temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        group = zarr.open_group(str(temp), mode="w")
        for name, dtype in (("labels", np.uint8), ("uncertainty", np.float16)):
            group.create_array(name, shape=shape, chunks=(chunk, *shape[1:]), dtype=dtype)
        futures = [
            predict_chunk.submit(
                checkpoint, job.volume.path, view.window, job.options, z, str(temp), device
            )
            for z in ranges
        ]
        wait(futures)  # every chunk has finished writing before anything is kept or removed
        features = {i: f for future in futures for i, f in future.result().items()}
        temp.rename(target)
    except BaseException:
        wait(futures)
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return features, len(futures)


def run_distributed(scheduler: str | None = None, workers: int = 2, **parameters) -> dict:
    """:func:`predict_distributed` on the Dask cluster at ``scheduler`` (None: a local
    cluster of ``workers`` processes, shut down afterwards)."""
    return predict_distributed.with_options(task_runner=task_runner(scheduler, workers))(
        **parameters
    )
