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

from dataclasses import dataclass

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tomoloop.active.policy import Decision, PromotionRules, StopRules, decide
from tomoloop.active.requests import RoundRequest
from tomoloop.flows.labelstudio import push_round, sync_annotations
from tomoloop.flows.pictures import artifact_name, publish_image, slice_picture
from tomoloop.flows.train import evaluate_model, train_semantic
from tomoloop.report.plots import plot_al_curve
from tomoloop.services import (
    Contest,
    LoopProgress,
    NothingToLabel,
    OpenedRound,
    RoundRecord,
    ScoredPool,
    ScoredRegions,
    Services,
    answer_reviews,
    answer_round,
    challenger_plan,
    champion_id,
    check_loop_options,
    chosen_row,
    contest_of,
    followed_score,
    loop_start,
    open_chosen_round,
    promotion_outcome,
    registered_version,
    score_and_choose,
    strategy_for,
    volume_scores,
)
from tomoloop.training.data import parse_tier_weights
from tomoloop.training.trainer import resolve_device

# Scoring the pool, the longest step of a round, as its own task run tagged for a
# concurrency limit (`prefect concurrency-limit create scoring 2`).
score_choose = task(
    score_and_choose, name="score-and-choose", tags=["scoring"], cache_policy=NO_CACHE
)


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
    unit: str = "slice",
    region: int = 32,
    budget_px: int | None = None,
    min_distance: float | None = None,
    volumes: tuple[str, ...] = (),
) -> dict:
    """Choose ``budget`` unlabelled training slices of ``dataset`` with ``strategy`` (model:
    the champion unless given; ``instance_model``: the Mask R-CNN the ``disagreement``
    strategy compares it with, whose particles the push pre-fills in the dataset's
    instance project) and push them to Label Studio as a new round — unless
    ``max_open`` rounds of the dataset are still open (a schedule must not pile up work
    nobody does). ``unit="region"`` chooses ``region`` px tiles instead, one per slice, for
    ``budget_px`` labelled pixels (default ``budget`` tiles' worth) at least
    ``min_distance`` px apart within a slice (default one region side): region tasks, sparse labels.
    With ``volumes`` (names) only their slices are scored and chosen.
    """
    asked = RoundRequest.of(strategy, budget, min_gap, unit, region, budget_px, min_distance,
                            per_volume, volumes)  # fmt: skip
    chooser = strategy_for(strategy, instance_model, asked.unit)  # options refused before writes
    asked.limits()
    torch_device = resolve_device(device)
    with Services.from_settings() as services:
        if instance_model is not None:
            registered_version(services, instance_model, "maskrcnn")
        waiting = services.registry.open_rounds(dataset)
        if max_open is not None and len(waiting) >= max_open:
            get_run_logger().info("no new round: rounds %s of %s are still open", waiting, dataset)
            return {"round": None, "open_rounds": waiting}
        scored, choice = score_choose(
            services, dataset, chooser, asked, model, passes, instance_model, cost_aware, seed,
            torch_device,
        )  # fmt: skip
        opened = open_chosen_round(
            services, dataset, chooser, scored, choice, asked.recorded_budget
        )
    _publish_round(dataset, opened, scored, chooser.scoring, torch_device)
    result = opened.to_dict()
    if push:
        result["push"] = push_round(opened.round, instance_model=instance_model, device=device)
    return result


def _publish_round(
    dataset: str,
    opened: OpenedRound,
    scored: ScoredPool | ScoredRegions,
    method: str,
    device: object,
) -> None:
    """The round's chosen slices as a table artifact, its top slice's prediction and
    ``method`` map as an image artifact, and a log line."""
    round_id, chosen = opened.round, opened.choice.chosen
    create_table_artifact(
        [{"rank": k, "axis": c.axis, **chosen_row(c)} for k, c in enumerate(chosen, start=1)],
        key=artifact_name("round", dataset, round_id, "chosen"),
        description=f"round {round_id} of {dataset}: {opened.unit}s chosen by {opened.strategy}",
    )
    top = opened.choice.top(scored.pool)
    publish_image(
        lambda path: slice_picture(
            scored.network, scored.spec, top.volume_path, top.axis, top.index, method,
            f"round {round_id}: {top.axis} = {top.index}, score {chosen[0].score:.4f}, "
            f"model {opened.model_version}",
            path, device,
        ),
        artifact_name("round", dataset, round_id, "uncertainty"),
        f"round {round_id}: the top slice, its prediction and {method} map",
    )  # fmt: skip
    get_run_logger().info(
        "round %s: %d of %d free %ss by %s (%s)",
        round_id,
        len(chosen),
        opened.choice.free,
        opened.unit,
        opened.strategy,
        "cost-aware" if opened.choice.lead_time else "by score",
    )


@flow(name="oracle-answers")
def oracle_answers(
    round_id: int, truth: dict[str, str], behaviour: dict | None = None, seed: int = 0
) -> dict:
    """Answer the round's unanswered Label Studio tasks from ground-truth label stacks
    (``{volume name: labels path}``) through the API, as a person would in the browser.

    ``behaviour`` holds :class:`tomoloop.active.Behaviour` fields (bias, noise, lead time).
    """
    with Services.from_settings() as services:
        answered = answer_round(services, round_id, truth, behaviour, seed)
    get_run_logger().info("oracle answered %d tasks of round %s", answered, round_id)
    return {"round": round_id, "answered": answered}


@flow(name="oracle-reviews")
def oracle_reviews(
    dataset: str, truth: dict[str, str], behaviour: dict | None = None, seed: int = 0
) -> dict:
    """Answer the dataset's unanswered review tasks from ground truth, as a reviewer would
    in the browser: a label equal to the truth is approved, any other corrected.
    """
    with Services.from_settings() as services:
        answered = answer_reviews(services, dataset, truth, behaviour, seed)
    get_run_logger().info("oracle reviewed %d labels of %s", answered, dataset)
    return {"dataset": dataset, "answered": answered}


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
    with Services.from_settings() as services:
        version = services.registry.refresh_dataset(dataset)
        champion = services.registry.champion(dataset)
    plan = challenger_plan(champion, arch, config, options, fine_tune)
    trained = train_semantic(
        version.id,
        plan.arch,
        name=dataset,
        config=plan.config,
        options=plan.options,
        device=device,
        parent=plan.parent,
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
    with Services.from_settings() as services:
        contest = contest_of(services, challenger)
    version = contest.dataset_version_id
    new = evaluate_model(challenger, version, "test", device, transport)
    old = None if contest.rival is None else evaluate_model(contest.rival, version, "test", device)
    decision = decide(new, old, rules)
    _publish_contest(contest, new, old, decision)
    if decision.promote:
        with Services.from_settings() as services:
            services.registry.promote(challenger)
    get_run_logger().info(
        "model %s %s: %s",
        challenger,
        "promoted" if decision.promote else "not promoted",
        "; ".join(decision.reasons),
    )
    return promotion_outcome(contest, new, old, decision, metric).to_dict()


def _publish_contest(contest: Contest, new: dict, old: dict | None, decision: Decision) -> None:
    """The contest's scores as a table artifact, the decision's reasons as its description."""
    models = ((contest.challenger, "challenger", new), (contest.champion, "champion", old))
    create_table_artifact(
        [
            {"model": m, "role": role, **{k: e[k] for k in ("mIoU", "mDSC", "pixel_accuracy")}}
            for m, role, e in models
            if e is not None
        ],
        key=artifact_name("promotion", contest.name, contest.challenger),
        description="; ".join(decision.reasons),
    )


@dataclass(frozen=True)
class _Retraining:
    """How a challenger is trained and judged: the promote flow's gates and the training
    settings (None: the champion's)."""

    config: dict | None
    margin: float
    fraction_tolerance: float
    tortuosity_tolerance: float | None
    tier_weights: str
    device: str


def _retrain_and_promote(dataset: str, how: _Retraining) -> tuple[dict, dict]:
    """A challenger retrained on every label of ``dataset`` and the promotion decision on
    it: (the retrain flow's answer, the promote flow's answer)."""
    challenger = retrain(
        dataset, config=how.config, tier_weights=how.tier_weights, device=how.device
    )
    decision = promote(
        challenger["model_version"],
        "mIoU",
        how.margin,
        how.fraction_tolerance,
        how.device,
        how.tortuosity_tolerance,
    )
    return challenger, decision


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
    with Services.from_settings() as services:
        waiting = services.registry.new_labels(dataset)
    if waiting < threshold:
        get_run_logger().info("%d new labels of %s (retrain at %d)", waiting, dataset, threshold)
        return {"new_labels": waiting, "retrained": False}
    how = _Retraining(None, margin, fraction_tolerance, tortuosity_tolerance, tier_weights, device)
    _, decision = _retrain_and_promote(dataset, how)
    return {"new_labels": waiting, "retrained": True, **decision}


def _labelled_round(
    progress: LoopProgress,
    dataset: str,
    round_id: int,
    truth: dict[str, str],
    behaviour: dict | None,
    reviewer: str | None,
    seed: int,
    how: _Retraining,
    volumes: tuple[str, ...],
) -> RoundRecord:
    """One round after its push: the oracle answers it (and the reviews, with the oracle
    reviewer), the labels come in, the round closes, a challenger is retrained and judged."""
    oracle_answers(round_id, truth, behaviour, seed)
    sync_annotations(dataset)
    reviewed = 0  # review tasks the oracle answered after this round (any still open)
    if reviewer == "oracle":
        reviewed = oracle_reviews(dataset, truth, None, seed)["answered"]
        if reviewed:
            sync_annotations(dataset)
    with Services.from_settings() as services:
        # counted on the round, whether the webhook or this sync stored the labels
        answered = services.registry.close_round(round_id)["annotated"]
        _, pixels = services.registry.round_pixels()[round_id]
    challenger, decision = _retrain_and_promote(dataset, how)
    pooled, per_volume = decision["champion_score"], decision["champion_volumes"]
    score = progress.history[-1] if pooled is None else followed_score(pooled, per_volume, volumes)
    taught = followed_score(decision["challenger_score"], decision["challenger_volumes"], volumes)
    return RoundRecord(
        round_id, answered, reviewed, challenger["model_version"], challenger["version"],
        decision["promoted"], score, decision["reasons"], pixels, taught,
    )  # fmt: skip


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
    unit: str = "slice",
    region: int = 32,
    budget_px: int | None = None,
    min_distance: float | None = None,
    per_volume: int | None = None,
    volumes: tuple[str, ...] = (),
) -> dict:
    """Active-learning rounds on ``dataset`` until ``rounds`` are done, the label budget is
    spent or the champion stops improving. Rounds take at most ``per_volume`` slices of a
    volume and, with ``volumes`` (names: the new scan), only those volumes' slices, and the
    loop then follows the champion's test mIoU on those volumes (its curve and stop rules);
    retraining uses every label of the dataset and promotion judges on every volume's test
    slices, so what earlier scans taught is kept.

    ``annotator="oracle"`` answers each round from ``truth`` (``{volume: labels path}``)
    through Label Studio; ``"human"`` stops after the first push and says where to label
    (run the loop again when the labels are in). ``reviewer="oracle"`` also answers the
    round's labels sent to review (exactly, from ``truth``) before retraining; None leaves
    reviews to people. ``unit="region"`` asks for regions as :func:`al_round` does; the
    label budget and the learning curve then count labelled pixels.
    """
    asked = RoundRequest.of(strategy, budget, min_gap, unit, region, budget_px, min_distance,
                            per_volume, volumes)  # fmt: skip
    oracle = check_loop_options(annotator, reviewer, truth, asked, behaviour, device)
    how = _Retraining(
        config, margin, fraction_tolerance, tortuosity_tolerance, tier_weights, device
    )
    with Services.from_settings() as services:  # the oracle is checked to have truth
        version, start = loop_start(services, dataset, truth if oracle else None, asked.volumes)
    progress = _first_progress(start, version.id, asked, device)
    stop = StopRules(label_budget, patience, min_gain, progress.unit)
    reason = f"{rounds} rounds done"
    for k in range(rounds):
        chosen, stopped = _next_round(progress, stop, dataset, asked, seed + k, device)
        if chosen is None:
            reason = stopped
            break
        if annotator == "human":
            return {"waiting_for": chosen["round"], "annotate_at": _annotate_at(chosen["push"])}
        progress = progress.after(
            _labelled_round(progress, dataset, chosen["round"], truth or {}, behaviour,
                            reviewer, seed + k, how, asked.volumes)
        )  # fmt: skip
        _publish_curve(dataset, progress, k + 1)
    with Services.from_settings() as services:
        return progress.to_dict(dataset, reason, champion_id(services, dataset))


def _first_progress(champion: int, version: int, asked: RoundRequest, device: str) -> LoopProgress:
    """The loop's progress before its first round: the champion's test mIoU on the
    dataset version (the named volumes' own, :func:`followed_score`), labels counted in
    the rounds' unit."""
    scores = evaluate_model(champion, version, "test", device)
    score = followed_score(scores["mIoU"], volume_scores(scores), asked.volumes)
    return LoopProgress((score,), regional=asked.unit.regional)


def _annotate_at(pushed: dict) -> str:
    """Where people label a pushed round: its project's data page (the region project's
    for a region round)."""
    return str(pushed["url"] if "url" in pushed else pushed["regions"]["url"])


def _next_round(
    progress: LoopProgress,
    stop: StopRules,
    dataset: str,
    asked: RoundRequest,
    seed: int,
    device: str,
) -> tuple[dict | None, str]:
    """The next round pushed (the al-round flow's answer), or None and why the loop stops
    before it (a stop rule, or no slice or region left to choose)."""
    reason = progress.stop_reason(stop)
    if reason is not None:
        return None, reason
    kind = asked.unit
    try:
        return al_round(
            dataset, asked.strategy, asked.budget, asked.per_volume, asked.min_gap, seed=seed,
            device=device, unit=kind.name, region=kind.region, budget_px=kind.budget_px,
            min_distance=kind.min_distance, volumes=asked.volumes,
        ), ""  # fmt: skip
    except NothingToLabel as exc:
        return None, str(exc)


def _publish_curve(dataset: str, progress: LoopProgress, rounds: int) -> None:
    """The loop's learning curve so far as an image artifact."""
    publish_image(
        lambda path: plot_al_curve({dataset: progress.curve()}, path, progress.unit),
        artifact_name("loop", dataset, "learning-curve"),
        f"{dataset}: champion test mIoU against {progress.unit}, after round {rounds}",
    )
