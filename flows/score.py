"""Score every slice of a registered volume with a model and store the scores.

load the model → read the volume slice by slice → uncertainty per slice → slice scores
in the registry (replacing that model's earlier scores of the same slices).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tomoloop.active.scoring import ScoreOptions, score_stack
from tomoloop.flows.resources import Services, load_registered_model
from tomoloop.stacks.tiff import open_stack
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
    log = get_run_logger()
    services = Services.from_settings()
    try:
        torch_device = resolve_device(device)
        model, spec, _ = load_registered_model(services, model_id, str(torch_device))
        options = ScoreOptions(method, aggregation, passes, spec.tile, spec.tile // 4, torch_device)
        found = services.registry.volume_named(volume)
        with open_stack(found.path) as stack:
            scores = {i: f.score for i, f in score_stack(model, stack, options, axis)}
        slice_ids = services.registry.register_slices(found.id, axis, scores)
        services.registry.record_scores(
            model_id, {slice_ids[i]: s for i, s in scores.items()}, options.label
        )
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        log.info("scored %d %s slices of %s with %s", len(scores), axis, volume, options.label)
        return {
            "model_version": model_id,
            "volume": volume,
            "axis": axis,
            "method": options.label,
            "slices": len(scores),
            "top": [{"index": i, "score": s} for i, s in ranked[:10]],
        }
    finally:
        services.close()
