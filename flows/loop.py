"""The active-learning loop.

al_round: score the dataset's unlabelled training slices with the champion → pick them with
a query strategy under the round's constraints → open the round → push it to Label Studio.
oracle_answers: answer a round's tasks from ground truth through Label Studio's API;
oracle_reviews: answer the dataset's review tasks the same way.
retrain: a new dataset version from every tier → train a challenger.
promote: the challenger replaces the champion when it beats it on the gold test split and
passes the microstructure gate. loop: rounds until the label budget is spent or the
champion stops improving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from tomoloop.active.oracle import Behaviour, answer
from tomoloop.active.policy import PromotionRules, StopRules, decide, stop_reason
from tomoloop.active.scoring import ScoreOptions, SliceFeatures, score_stack
from tomoloop.active.selection import Candidate, Constraints, LeadTimeModel
from tomoloop.active.strategies import get
from tomoloop.adapters.labelstudio import brush_results
from tomoloop.adapters.labelstudio_registry import project_title, review_title, slice_of
from tomoloop.coco.convert import class_index_lut
from tomoloop.config import Settings
from tomoloop.db.registry import PoolSlice, RegistryError
from tomoloop.flows.labelstudio import connect, push_round, sync_annotations
from tomoloop.flows.pictures import artifact_name, publish_image, slice_picture
from tomoloop.flows.resources import (
    Services,
    dataset_phases,
    load_registered_model,
    maskrcnn_version,
    pool_groups,
)
from tomoloop.flows.train import evaluate_model, train_semantic
from tomoloop.labels.phases import PhaseMap
from tomoloop.report.plots import plot_al_curve
from tomoloop.stacks.tiff import check_declared, check_volume_shape, open_stack
from tomoloop.training.data import parse_tier_weights
from tomoloop.training.trainer import resolve_device


class NothingToLabel(RegistryError):
    """Every training slice is labelled, pending or too close to one that is."""


def _champion_id(services: Services, dataset: str) -> int:
    champion = services.registry.champion(dataset)
    if champion is None:
        raise RegistryError(
            f"dataset {dataset!r} has no champion model: train one "
            f"(`tomoloop train --dataset {dataset}`) and promote it first"
        )
    return champion.id


def _features(model, pool: list[PoolSlice], options: ScoreOptions) -> dict[int, SliceFeatures]:
    """Features of every pool slice, one pass over each volume and axis."""
    out = {}
    for (path, axis), ids in pool_groups(pool).items():
        with open_stack(path) as stack:
            for index, features in score_stack(model, stack, options, axis, sorted(ids)):
                out[ids[index]] = features
    return out


@flow(name="al-round")
def al_round(
    dataset: str,
    strategy: str = "bald",
    budget: int = 8,
    per_volume: int | None = None,
    min_gap: int = 3,
    model: int | None = None,
    cost_aware: bool = True,
    seed: int = 0,
    passes: int = 8,
    push: bool = True,
    max_open: int | None = None,
    instance_model: int | None = None,
    device: str = "auto",
) -> dict:
    """Choose ``budget`` unlabelled training slices of ``dataset`` with ``strategy`` (model:
    the champion unless given; ``instance_model``: the Mask R-CNN the ``disagreement``
    strategy compares it with, whose particles the push pre-fills in the dataset's
    instance project) and push them to Label Studio as a new round — unless
    ``max_open`` rounds of the dataset are still open (a schedule must not pile up work
    nobody does).
    """
    log = get_run_logger()
    chooser = get(strategy)  # every option is refused before scores or a round are written
    if chooser.instances and instance_model is None:
        raise RegistryError(
            f"strategy {strategy} compares a Mask R-CNN with the semantic model: give "
            "its model version (--instance-model; train one with --arch maskrcnn)"
        )
    limits = Constraints(budget, per_volume, min_gap)
    torch_device = resolve_device(device)
    services = Services.from_settings()
    try:
        registry = services.registry
        if instance_model is not None:
            maskrcnn_version(services, instance_model)
        waiting = registry.open_rounds(dataset)
        if max_open is not None and len(waiting) >= max_open:
            log.info("no new round: rounds %s of %s are still open", waiting, dataset)
            return {"round": None, "open_rounds": waiting}
        version = registry.dataset(dataset)
        model_id = model if model is not None else _champion_id(services, dataset)
        network, spec, _ = load_registered_model(services, model_id, str(torch_device))
        options = ScoreOptions(
            chooser.scoring, "mean", passes, spec.tile, spec.tile // 4, torch_device, chooser.embed
        )
        pool = registry.pool(version.id)
        features = _features(network, pool, options)
        if chooser.instances:
            # imported here: detectron2 loads only for the strategy that needs it
            from tomoloop.flows.instances import disagreement_scores

            scores = disagreement_scores(
                services, pool, network, spec, instance_model, torch_device
            )
            features = {k: replace(f, score=scores[k]) for k, f in features.items()}
        label = f"disagreement/{instance_model}" if chooser.instances else options.label
        registry.record_scores(model_id, {k: f.score for k, f in features.items()}, label)
        candidates = {
            p.slice_id: Candidate.of(p.slice_id, p.volume_id, p.axis, p.index, features[p.slice_id])
            for p in pool
        }
        free = [candidates[p.slice_id] for p in pool if p.state == "free"]
        taken = [candidates[p.slice_id] for p in pool if p.state != "free"]
        seen = registry.lead_times(dataset)
        lead_time = None
        if cost_aware:
            known = [(candidates[k].boundary, s) for k, s in seen.items() if k in candidates]
            lead_time = LeadTimeModel.fit([b for b, _ in known], [s for _, s in known])
        chosen = chooser.select(free, limits, taken, np.random.default_rng(seed), lead_time)
        if not chosen:
            raise NothingToLabel(
                f"no slice of {dataset!r} can be chosen: all {len(pool)} training slices are "
                f"labelled, pending or closer than {min_gap} slices to one that is"
            )
        round_id = registry.open_round(
            dataset, chooser.name, model_id, [(c.slice_id, c.score) for c in chosen], budget
        )
        create_table_artifact(
            [
                {"rank": k, "slice": c.slice_id, "axis": c.axis, "index": c.index, "score": c.score}
                for k, c in enumerate(chosen, start=1)
            ],
            key=f"round-{round_id}-chosen",
            description=f"round {round_id} of {dataset}: slices chosen by {chooser.name}",
        )
        top = next(p for p in pool if p.slice_id == chosen[0].slice_id)
        publish_image(
            lambda path: slice_picture(
                network, spec, top.volume_path, top.axis, top.index, chooser.scoring,
                f"round {round_id}: {top.axis} = {top.index}, score {chosen[0].score:.4f}, "
                f"model {model_id}",
                path, torch_device,
            ),
            f"round-{round_id}-uncertainty",
            f"round {round_id}: the top slice, its prediction and {chooser.scoring} map",
        )  # fmt: skip
        log.info(
            "round %s: %d of %d free slices by %s (%s)",
            round_id,
            len(chosen),
            len(free),
            chooser.name,
            "cost-aware" if lead_time else "by score",
        )
    finally:
        services.close()
    result = {
        "round": round_id,
        "model_version": model_id,
        "strategy": chooser.name,
        "chosen": [{"slice": c.slice_id, "index": c.index, "score": c.score} for c in chosen],
        "free": len(free),
        "lead_time_model": asdict(lead_time) if lead_time else None,
    }
    if push:
        result["push"] = push_round(round_id, instance_model=instance_model, device=device)
    return result


@flow(name="oracle-answers")
def oracle_answers(
    round_id: int, truth: dict[str, str], behaviour: dict | None = None, seed: int = 0
) -> dict:
    """Answer the round's unanswered Label Studio tasks from ground-truth label stacks
    (``{volume name: labels path}``) through the API, as a person would in the browser.

    ``behaviour`` holds :class:`tomoloop.active.Behaviour` fields (bias, noise, lead time).
    """
    services = Services.from_settings()
    try:
        registry = services.registry
        round_ = registry.al_round(round_id)
        wanted = {i.slice_id for i in registry.round_items(round_id)}
        answered = _answer_project(
            services, round_.dataset, project_title, truth, behaviour, seed, wanted
        )
        get_run_logger().info("oracle answered %d tasks of round %s", answered, round_id)
        return {"round": round_id, "answered": answered}
    finally:
        services.close()


@flow(name="oracle-reviews")
def oracle_reviews(
    dataset: str, truth: dict[str, str], behaviour: dict | None = None, seed: int = 0
) -> dict:
    """Answer the dataset's unanswered review tasks from ground truth, as a reviewer would
    in the browser: a label equal to the truth is approved, any other corrected.
    """
    services = Services.from_settings()
    try:
        answered = _answer_project(services, dataset, review_title, truth, behaviour, seed)
        get_run_logger().info("oracle reviewed %d labels of %s", answered, dataset)
        return {"dataset": dataset, "answered": answered}
    finally:
        services.close()


def _check_truth(services: Services, dataset_version_id: int, truth: dict[str, str]) -> None:
    """Refuse ground truth that misses a volume of the dataset version, names a volume
    that is not registered, or is not a readable label stack of that volume's shape."""
    volumes = services.registry.dataset_volumes(dataset_version_id)
    missing = sorted({v.name for v in volumes} - set(truth))
    if missing:
        raise RegistryError(
            f"the oracle has no ground truth for volume(s) {', '.join(missing)}: give each "
            "one's label stack (--truth VOLUME=LABELS.tif)"
        )
    for name, path in truth.items():
        found = services.registry.volume_named(name)
        with open_stack(path) as labels:
            shape = (found.shape_z, found.shape_y, found.shape_x)
            check_volume_shape(labels, shape, name, "--truth labels")


def _answer_project(
    services: Services,
    dataset: str,
    title: Callable[[str], str],
    truth: dict[str, str],
    behaviour: dict | None,
    seed: int,
    wanted: set[int] | None = None,
) -> int:
    """Submit the oracle's answer to every unanswered task of the dataset's project
    ``title(dataset)`` (only slices in ``wanted``, when given); how many it answered.
    """
    rng = np.random.default_rng(seed)
    how = Behaviour(**(behaviour or {}))
    phases: PhaseMap = dataset_phases(services, services.registry.dataset(dataset))
    lut = class_index_lut(phases)
    connection = connect(Settings())
    project = connection.client.find_project(title(dataset))
    if project is None:
        return 0
    answered = 0
    for task_id, data in connection.client.unanswered(project):
        if wanted is not None and slice_of(data["key"]) not in wanted:
            continue
        if data["volume"] not in truth:
            raise RegistryError(
                f"the oracle has no ground truth for volume {data['volume']!r}: "
                f"give its label stack (truth has {sorted(truth)})"
            )
        with open_stack(truth[data["volume"]]) as labels:
            raw = labels.slice(data["axis"], int(data["index"]))
            check_declared(raw, phases, f"{labels.path.name} {data['axis']}={data['index']}")
            gold = lut[raw]
        mask = answer(gold, phases.names, how, rng)
        result = brush_results(mask, phases.names)
        connection.client.submit(task_id, result, round(how.lead_time(mask), 1))
        answered += 1
    return answered


@flow(name="retrain")
def retrain(
    dataset: str,
    arch: str | None = None,
    config: dict | None = None,
    options: dict | None = None,
    fine_tune: bool = True,
    tier_weights: str = "",
    device: str = "auto",
) -> dict:
    """Train a challenger on a new version of ``dataset`` holding every slice's best label.

    Architecture, options and training settings default to the champion's; with
    ``fine_tune`` the challenger starts from the champion's weights.
    """
    resolve_device(device)  # bad options are refused before a dataset version is frozen
    parse_tier_weights(tier_weights)
    services = Services.from_settings()
    try:
        registry = services.registry
        version = registry.refresh_dataset(dataset)
        champion = registry.champion(dataset)
    finally:
        services.close()
    request = champion.config if champion is not None else {}
    trained = train_semantic(
        version.id,
        arch or (champion.architecture if champion is not None else "unet"),
        name=dataset,
        config=config if config is not None else request.get("train"),
        options=options if options is not None else request.get("options"),
        device=device,
        parent=champion.id if fine_tune and champion is not None else None,
        tier_weights=tier_weights,
    )
    return {"dataset_version": version.id, "version": version.version, **trained}


@flow(name="promote")
def promote(
    challenger: int,
    metric: str = "mIoU",
    margin: float = 0.0,
    fraction_tolerance: float = 0.05,
    device: str = "auto",
    tortuosity_tolerance: float | None = 0.2,
) -> dict:
    """Make ``challenger`` the champion of its name if it beats the champion on its
    dataset version's test split and passes the microstructure gates: phase fractions, and
    the first phase's (the pore's) in-plane tortuosity unless ``tortuosity_tolerance`` is
    None.
    """
    rules = PromotionRules(metric, margin, fraction_tolerance, tortuosity_tolerance or 0.0)
    transport = None if tortuosity_tolerance is None else 0  # the first phase carries ions
    services = Services.from_settings()
    try:
        model = services.registry.model(challenger)
        champion = services.registry.champion(model.name)
    finally:
        services.close()
    if model.dataset_version_id is None:
        raise RegistryError(f"model {challenger} has no training dataset version to judge it on")
    new = evaluate_model(challenger, model.dataset_version_id, "test", device, transport)
    old = None
    champion_id = None if champion is None else champion.id
    if champion_id is not None and champion_id != challenger:
        old = evaluate_model(champion_id, model.dataset_version_id, "test", device)
    decision = decide(new, old, rules)
    create_table_artifact(
        [
            {"model": m, "role": role, **{k: e[k] for k in ("mIoU", "mDSC", "pixel_accuracy")}}
            for m, role, e in ((challenger, "challenger", new), (champion_id, "champion", old))
            if e is not None
        ],
        key=f"promotion-{challenger}",
        description="; ".join(decision.reasons),
    )
    if decision.promote:
        services = Services.from_settings()
        try:
            services.registry.promote(challenger)
        finally:
            services.close()
    get_run_logger().info(
        "model %s %s: %s",
        challenger,
        "promoted" if decision.promote else "not promoted",
        "; ".join(decision.reasons),
    )
    champion_score = new[metric] if decision.promote else None if old is None else old[metric]
    return {
        "challenger": challenger,
        "champion_before": champion_id,
        "promoted": decision.promote,
        "reasons": list(decision.reasons),
        "champion_score": champion_score,
    }


@flow(name="retrain-on-labels")
def retrain_on_labels(
    dataset: str,
    threshold: int = 8,
    margin: float = 0.0,
    fraction_tolerance: float = 0.05,
    tortuosity_tolerance: float | None = 0.2,
    tier_weights: str = "",
    device: str = "auto",
) -> dict:
    """Retrain and try to promote once people have made ``threshold`` labels the newest
    model did not see; otherwise nothing (the trigger checked on a schedule and on
    Label Studio's webhook events).
    """
    services = Services.from_settings()
    try:
        waiting = services.registry.new_labels(dataset)
    finally:
        services.close()
    if waiting < threshold:
        get_run_logger().info("%d new labels of %s (retrain at %d)", waiting, dataset, threshold)
        return {"new_labels": waiting, "retrained": False}
    challenger = retrain(dataset, tier_weights=tier_weights, device=device)
    decision = promote(
        challenger["model_version"],
        "mIoU",
        margin,
        fraction_tolerance,
        device,
        tortuosity_tolerance,
    )
    return {"new_labels": waiting, "retrained": True, **decision}


@flow(name="loop")
def loop(
    dataset: str,
    rounds: int = 3,
    strategy: str = "bald",
    budget: int = 8,
    min_gap: int = 3,
    annotator: str = "oracle",
    truth: dict[str, str] | None = None,
    behaviour: dict | None = None,
    reviewer: str | None = None,
    label_budget: int | None = None,
    patience: int = 2,
    min_gain: float = 0.0,
    margin: float = 0.0,
    fraction_tolerance: float = 0.05,
    tortuosity_tolerance: float | None = 0.2,
    config: dict | None = None,
    tier_weights: str = "",
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """Active-learning rounds on ``dataset`` until ``rounds`` are done, the label budget is
    spent or the champion stops improving.

    ``annotator="oracle"`` answers each round from ``truth`` (``{volume: labels path}``)
    through Label Studio; ``"human"`` stops after the first push and says where to label
    (run the loop again when the labels are in). ``reviewer="oracle"`` also answers the
    round's labels sent to review (exactly, from ``truth``) before retraining; None leaves
    reviews to people.
    """
    if annotator not in ("oracle", "human"):
        raise RegistryError(f"annotator {annotator!r}: use oracle or human")
    if reviewer not in (None, "oracle"):
        raise RegistryError(f"reviewer {reviewer!r}: use oracle or None (people review)")
    if "oracle" in (annotator, reviewer) and not truth:
        raise RegistryError(
            "the oracle annotator and reviewer need the ground-truth label stacks (truth)"
        )
    stop = StopRules(label_budget, patience, min_gain)
    get(strategy)  # the rounds' options, refused before the champion is evaluated
    Constraints(budget, None, min_gap)
    Behaviour(**(behaviour or {}))
    resolve_device(device)
    services = Services.from_settings()
    try:
        version = services.registry.dataset(dataset)
        if "oracle" in (annotator, reviewer):
            _check_truth(services, version.id, truth or {})
        start = _champion_id(services, dataset)
    finally:
        services.close()
    history = [evaluate_model(start, version.id, "test", device)["mIoU"]]
    done, counts = [], [0]  # counts: slices labelled so far, after each round
    reason = None
    for k in range(rounds):
        reason = stop_reason(history, counts[-1], stop)
        if reason is not None:
            break
        try:
            chosen = al_round(
                dataset, strategy, budget, None, min_gap, seed=seed + k, device=device
            )
        except NothingToLabel as exc:
            reason = str(exc)
            break
        if annotator == "human":
            return {"waiting_for": chosen["round"], "annotate_at": chosen["push"]["url"]}
        oracle_answers(chosen["round"], truth, behaviour, seed + k)
        sync_annotations(dataset)
        reviewed = 0  # review tasks the oracle answered after this round (any still open)
        if reviewer == "oracle":
            reviewed = oracle_reviews(dataset, truth, None, seed + k)["answered"]
            if reviewed:
                sync_annotations(dataset)
        services = Services.from_settings()
        try:  # counted on the round, whether the webhook or this sync stored the labels
            answered = services.registry.close_round(chosen["round"])["annotated"]
        finally:
            services.close()
        challenger = retrain(dataset, config=config, tier_weights=tier_weights, device=device)
        decision = promote(
            challenger["model_version"],
            "mIoU",
            margin,
            fraction_tolerance,
            device,
            tortuosity_tolerance,
        )
        score = decision["champion_score"]
        history.append(history[-1] if score is None else score)
        counts.append(counts[-1] + answered)
        publish_image(
            lambda path: plot_al_curve(list(zip(counts, history, strict=True)), path),
            artifact_name("loop", dataset, "learning-curve"),
            f"{dataset}: champion test mIoU against slices labelled, after round {k + 1}",
        )
        done.append(
            {
                "round": chosen["round"],
                "labelled": answered,
                "reviewed": reviewed,
                "challenger": challenger["model_version"],
                "dataset_version": challenger["version"],
                "promoted": decision["promoted"],
                "champion_mIoU": history[-1],
                "reasons": decision["reasons"],
            }
        )
    else:
        reason = f"{rounds} rounds done"
    services = Services.from_settings()
    try:
        champion = _champion_id(services, dataset)
    finally:
        services.close()
    return {
        "dataset": dataset,
        "rounds": done,
        "stopped": reason,
        "mIoU_history": history,
        "champion": champion,
    }
