"""The demo, tomoloop's main job end to end.

Label Studio up → a generated electrode (or the user's stacks) ingested with its rough
labels → gold labels for the val/test slices → a first model trained and made champion →
active-learning rounds answered by the oracle annotator through Label Studio, each followed
by retraining and promotion → a report (markdown, the learning curve over rounds, the
uncertainty of a slice chosen in the last round) and a registry summary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger

from tomoloop.active.review import AGREEMENT_KINDS
from tomoloop.adapters.labelstudio_server import LocalLabelStudio
from tomoloop.config import Settings
from tomoloop.db.engine import make_engine, upgrade
from tomoloop.db.views import model_row, round_row
from tomoloop.demo import generate_sample
from tomoloop.flows.ingest import add_gold, ingest
from tomoloop.flows.loop import loop, promote
from tomoloop.flows.pictures import slice_picture
from tomoloop.flows.resources import Services, load_registered_model
from tomoloop.flows.train import train_semantic
from tomoloop.labels.synthetic import ELECTRODE_PHASES
from tomoloop.report.plots import plot_al_curve

DEMO_TRAIN = {"epochs": 8, "patch": 64, "batch": 8, "patches_per_epoch": 128}
DEMO_NETWORK: dict = {}  # the U-Net of Quenum et al. 2023, §3.1
# People's corrections outweigh the rough labels they correct (weights per pixel of loss).
DEMO_TIER_WEIGHTS = "auto=0.25,annotator=4,expert=4"
# The oracle annotator is ragged along phase boundaries (Su et al. 2022, abstract: human bias;
# docs/references.md); the oracle reviewer answers exactly, so labels sent to review come back
# corrected.
DEMO_ANNOTATOR = {"noise": 0.1}


# The demo's models train 8 epochs on 64-px patches; their pore tortuosity on the gold test
# slices stays ~30 % below the gold's (they under-predict the binder that makes the pore
# wind). 50 % still refuses a model that closes or opens the pore network wholesale; the
# platform default (20 %) would refuse every challenger of so short a training.
DEMO_TORTUOSITY_TOLERANCE = 0.5


@flow(name="demo")
def demo(
    out: str,
    gray: str | None = None,
    labels: str | None = None,
    gold: str | None = None,
    phases: str | None = None,
    name: str = "nmc-demo",
    rounds: int = 3,
    budget: int = 4,
    strategy: str = "bald",
    fraction_tolerance: float = 0.05,
    tortuosity_tolerance: float = DEMO_TORTUOSITY_TOLERANCE,
    config: dict | None = None,
    options: dict | None = None,
    port: int = 8080,
    annotator: str = "oracle",
    device: str = "auto",
) -> dict:
    """Run the active-learning loop end to end into ``out``; the summary.

    ``annotator="human"`` stops after the first round is pushed and says where to label;
    `tomoloop loop` (or the `retrain-on-labels` deployment of `tomoloop serve`) carries on
    once the labels are in.

    Without ``gray``/``labels`` a synthetic electrode is generated with exact labels (gold) and
    rough ones (a labelling bias as in Su et al. 2022, abstract; binder eroded is tomoloop's
    choice).
    With the user's stacks, ``gold`` (default: the labels themselves) is what the oracle
    answers from and what models are judged on.
    """
    log = get_run_logger()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if gray is None:
        gray, labels, gold = (str(p) for p in generate_sample(folder / "sample"))
        phases = str(ELECTRODE_PHASES)
    gold = gold or labels
    settings = Settings()
    label_studio = settings.label_studio_url
    if not label_studio:
        label_studio = LocalLabelStudio(settings.home, port=port).up().url
        log.info("Label Studio at %s", label_studio)
    engine = make_engine(settings.registry_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    ingested = ingest(gray=gray, labels=labels, name=name, phases=phases, split=(0.7, 0.15, 0.15))
    gilded = add_gold(name, name, gold)
    first = train_semantic(
        gilded["dataset_version"],
        "unet",
        name=name,
        config=config or DEMO_TRAIN,
        options=options or DEMO_NETWORK,
        device=device,
        tier_weights=DEMO_TIER_WEIGHTS,
    )
    # Nothing to compare the first model with: it becomes the champion to score with.
    promote(
        first["model_version"], fraction_tolerance=1.0, device=device, tortuosity_tolerance=None
    )
    result = loop(
        name,
        rounds,
        strategy,
        budget,
        min_gap=2,
        annotator=annotator,
        truth={name: gold},
        behaviour=DEMO_ANNOTATOR,
        reviewer="oracle" if annotator == "oracle" else None,
        fraction_tolerance=fraction_tolerance,
        tortuosity_tolerance=tortuosity_tolerance,
        config=config or DEMO_TRAIN,
        tier_weights=DEMO_TIER_WEIGHTS,
        device=device,
    )
    where = {"home": str(settings.home), "label_studio": label_studio}
    if "waiting_for" in result:
        return {**result, **where, "dataset": name}
    return {**_report(folder, ingested, first, result, strategy), **where}


def _report(folder: Path, ingested: dict, first: dict, result: dict, strategy: str) -> dict:
    """report.md, al_curve.png, uncertainty.png and summary.json in ``folder``."""
    labelled = np.cumsum([0] + [r["labelled"] for r in result["rounds"]])
    curve = plot_al_curve(
        list(zip(labelled.tolist(), result["mIoU_history"], strict=False)),
        folder / "al_curve.png",
    )
    services = Services.from_settings()
    try:
        registry = services.registry
        models = [
            _compact(model_row(registry, m))
            for m in registry.models()
            if m.name == result["dataset"]
        ]
        rounds = [round_row(r, states) for r, states in registry.rounds()]
        reviews = registry.review_summary(result["dataset"])
        picture = None
        if result["rounds"]:
            last = result["rounds"][-1]["round"]
            item = registry.round_items(last)[0]
            slice_, volume = registry.slice_volumes([item.slice_id])[item.slice_id]
            model, spec, _ = load_registered_model(services, result["champion"])
            picture = slice_picture(
                model,
                spec,
                volume.path,
                slice_.axis,
                slice_.index,
                "bald" if strategy in ("bald", "hybrid") else "entropy",
                f"round {last}: {slice_.axis} = {slice_.index} (score {item.score:.4f}), "
                f"champion model {result['champion']}",
                folder / "uncertainty.png",
            )
    finally:
        services.close()
    summary = {
        "dataset": result["dataset"],
        "volume_id": ingested["volume_id"],
        "first_model": first["model_version"],
        "first_model_mIoU": first["mIoU"],
        "loop": result,
        "models": models,
        "rounds": rounds,
        "reviews": reviews,
        "al_curve": str(curve),
        "uncertainty": None if picture is None else str(picture),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    report = folder / "report.md"
    report.write_text(report_markdown(summary))
    summary["report"] = str(report)
    return summary


def _compact(row: dict) -> dict:
    """A model listing row cut to what the demo's table shows."""
    keep = ("id", "arch", "stage", "dataset_version", "parent")
    return {**{k: row[k] for k in keep}, "test mIoU": row["metrics"].get("test/mIoU")}


def report_markdown(summary: dict) -> str:
    """The demo's report for people: what ran, the rounds, the champion's progress."""
    loop_result = summary["loop"]
    lines = [
        f"# tomoloop active learning on {summary['dataset']}",
        "",
        f"First model {summary['first_model']} (trained on the rough labels): test mIoU "
        f"{summary['first_model_mIoU']:.4f}.",
        "",
        "| round | slices labelled | reviewed | challenger | dataset version | promoted "
        "| champion mIoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in loop_result["rounds"]:
        lines.append(
            f"| {r['round']} | {r['labelled']} | {r['reviewed']} | {r['challenger']} "
            f"| v{r['dataset_version']} | {'yes' if r['promoted'] else 'no'} "
            f"| {r['champion_mIoU']:.4f} |"
        )
    lines.append("")
    lines += [f"- round {r['round']}: {'; '.join(r['reasons'])}" for r in loop_result["rounds"]]
    reviews = summary["reviews"]
    states = ", ".join(f"{n} {state}" for state, n in reviews["states"].items() if n)
    reasons = ", ".join(f"{n} {why}" for why, n in reviews["reasons"].items())
    lines += ["", f"Reviews: {states or 'none'} (reasons: {reasons or 'none'})."]
    for kind, pairs in reviews["agreement"].items():
        if pairs:
            dice = ", ".join(f"{name} {v['dice']:.3f}" for name, v in pairs.items())
            lines.append(f"Mean Dice, {AGREEMENT_KINDS[kind]}: {dice}.")
    lines += [
        "",
        f"Stopped: {loop_result['stopped']}. Champion: model {loop_result['champion']}.",
        "",
        "![learning curve](al_curve.png)",
    ]
    if summary["uncertainty"]:
        lines += ["", "![a slice chosen in the last round](uncertainty.png)"]
    return "\n".join(lines) + "\n"
