"""Score every slice of a registered volume with a model and store the scores.

load the model → read the volume slice by slice → uncertainty per slice → slice scores
in the registry (replacing that model's earlier scores of the same slices).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tomoloop.active.scoring import score_stack
from tomoloop.services import Services, record_volume_scores, volume_scoring
from tomoloop.stacks.opener import open_stack
from tomoloop.training.trainer import resolve_device


@flow(name="score")
def score_volume(
    model_id: int,
    volume: str,
    method: str = "entropy",
    aggregation: str = "mean",
    passes: int = 8,
    axis: str = "z",
    device: str = "auto",
) -> dict:
    """Scores of every ``axis`` slice of volume ``volume`` by model ``model_id``."""
    with Services.from_settings() as services:
        torch_device = resolve_device(device)
        job = volume_scoring(services, model_id, volume, method, aggregation, passes, torch_device)
        with open_stack(job.volume.path) as stack:
            network, label = job.model.network, job.options.label
            scores = {i: f.score for i, f in score_stack(network, stack, job.options, axis)}
        record_volume_scores(services, model_id, job.volume, axis, scores, label)
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    get_run_logger().info("scored %d %s slices of %s with %s", len(scores), axis, volume, label)
    return {
        "model_version": model_id,
        "volume": volume,
        "axis": axis,
        "method": label,
        "slices": len(scores),
        "top": [{"index": i, "score": s} for i, s in ranked[:10]],
    }
