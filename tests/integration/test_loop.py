"""The active-learning loop end to end: a real Label Studio, the oracle answering through
its API, retraining, promotion and the stop rules.
"""

import json
import uuid

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from tomoloop.db.models import Tier
from tomoloop.db.registry import Registry, RegistryError
from tomoloop.labels.masks import decode_class_mask

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
]
TRAIN = {"epochs": 2, "patch": 32, "batch": 4, "patches_per_epoch": 16, "overlap": 8}
NET = {"base": 4, "depth": 2}


@pytest.fixture
def champion(tmp_path, label_studio_env, electrode_volume):
    """Rough auto labels (particles eroded: a binarisation bias) with gold val/test labels,
    a first model trained on them and promoted; ``(registry, dataset, gold path, model)``.
    """
    from tomoloop.flows.ingest import add_gold, ingest
    from tomoloop.flows.loop import promote
    from tomoloop.flows.train import train_semantic

    url = label_studio_env
    gold = electrode_volume
    rough = gold.copy()
    particles = ndimage.binary_erosion(gold == 1, iterations=2)
    rough[(gold == 1) & ~particles] = 0
    noise = np.random.default_rng(0).normal(0, 8, gold.shape)
    gray = np.clip(gold * 80 + 20 + noise, 0, 255).astype(np.uint8)
    for name, array in {"gray": gray, "rough": rough, "gold": gold}.items():
        tifffile.imwrite(tmp_path / f"{name}.tif", array)
    name = f"loop-{uuid.uuid4().hex[:8]}"
    ingest(
        gray=str(tmp_path / "gray.tif"),
        labels=str(tmp_path / "rough.tif"),
        name=name,
        phases="pore=0,nmc=1,cbd=2",
        split=(0.6, 0.2, 0.2),
    )
    gilded = add_gold(name, name, str(tmp_path / "gold.tif"))
    assert gilded["version"] == 2 and gilded["added"] > 0
    first = train_semantic(gilded["dataset_version"], "unet", config=TRAIN, options=NET)
    assert promote(first["model_version"], fraction_tolerance=1.0, tortuosity_tolerance=None)[
        "promoted"
    ]
    return Registry.from_url(url), name, str(tmp_path / "gold.tif"), first["model_version"]


def test_rounds_answered_by_the_oracle_through_label_studio_retrain_and_stop_on_budget(champion):
    from tomoloop.flows.loop import loop

    registry, name, gold, _ = champion
    result = loop(
        name,
        rounds=3,
        strategy="bald",
        budget=2,
        min_gap=1,  # 8 training slices: a gap of 2 can leave round 2 nothing to choose
        truth={name: gold},
        label_budget=4,
        patience=3,  # two rounds without a promotion must not stop it before the budget
        fraction_tolerance=1.0,
        config=TRAIN,
        device="cpu",
    )
    assert result["stopped"] == "label budget spent (4 of 4 slices)"
    assert [r["labelled"] for r in result["rounds"]] == [2, 2]
    assert len(result["mIoU_history"]) == 3
    assert [r["dataset_version"] for r in result["rounds"]] == [3, 4]

    rounds = {r.id: (r, states) for r, states in registry.rounds()}
    chosen = []
    for entry in result["rounds"]:
        round_, states = rounds[entry["round"]]
        assert round_.status == "closed" and states == {"annotated": 2}
        assert round_.strategy == "bald" and round_.model_version_id is not None
        items = registry.round_items(round_.id)
        assert all(i.annotation_seconds and i.annotation_seconds >= 20 for i in items)
        chosen += [i.slice_id for i in items]
    assert len(set(chosen)) == 4  # a labelled or pending slice is never chosen again
    located = registry.slice_volumes(chosen)
    indices = sorted(located[s][0].index for s in chosen)
    train = {p.index for p in registry.pool(registry.dataset(name).id, "train")}
    assert set(indices) <= train  # never a val or test slice
    _assert_round_artifacts(name, [r["round"] for r in result["rounds"]])
    seen = registry.lead_times(name)  # the second round ranked cost-aware on these
    assert set(seen) == set(chosen) and all(s >= 20 for s in seen.values())

    best = {a.slice_id: a for a in registry.best_annotations()}
    for slice_id in chosen:  # the oracle's unbiased answers are the gold masks, pixel exact
        slice_, _ = located[slice_id]
        assert best[slice_id].tier == Tier.ANNOTATOR
        np.testing.assert_array_equal(
            decode_class_mask(best[slice_id].mask_rle), tifffile.imread(gold)[slice_.index]
        )
    latest = registry.dataset(name)
    assert registry.dataset_counts(latest.id)["train"]["annotator"] == 4
    assert registry.champion(name) is not None


def test_a_region_loop_asks_for_tiles_stores_sparse_labels_and_counts_pixels(champion):
    from tomoloop.adapters.labelstudio_registry import regions_title
    from tomoloop.flows.labelstudio import push_round
    from tomoloop.flows.loop import loop
    from tomoloop.labels.phases import IGNORE
    from tomoloop.services import Services

    registry, name, gold, _ = champion
    result = loop(
        name,
        rounds=2,
        strategy="entropy",
        budget=2,
        truth={name: gold},
        fraction_tolerance=1.0,
        config=TRAIN,
        device="cpu",
        unit="region",
        region=16,
    )
    assert result["stopped"] == "2 rounds done"
    truth = tifffile.imread(gold)
    shape = truth.shape[1:]
    units = registry.round_pixels()
    total, seen = 0, set()
    for entry in result["rounds"]:
        items = registry.round_items(entry["round"])
        assert all(i.state == "annotated" and i.region is not None for i in items)
        assert len({i.slice_id for i in items}) == len(items)  # one region per slice
        located = registry.slice_volumes(i.slice_id for i in items)
        pixels = 0
        for item in items:
            slice_, _ = located[item.slice_id]
            y0, x0, size = item.region
            inside = np.zeros(shape, bool)
            inside[y0 : y0 + size, x0 : x0 + size] = True
            label = registry.best_annotations(slice_.volume_id)
            (stored,) = [a for a in label if a.slice_id == item.slice_id]
            assert stored.tier == Tier.ANNOTATOR and stored.labelled_px == inside.sum()
            expected = np.where(inside, truth[slice_.index], IGNORE)  # the oracle paints truth
            np.testing.assert_array_equal(decode_class_mask(stored.mask_rle), expected)
            pixels += int(inside.sum())
            seen.add(item.slice_id)
        assert 0 < pixels <= 2 * 16 * 16  # the default pixel budget: --budget tiles' worth
        assert entry["labelled_px"] == pixels and units[entry["round"]] == ("region", pixels)
        total += pixels
    assert len(seen) == sum(len(registry.round_items(r["round"])) for r in result["rounds"])
    assert result["curve"]["unit"] == "pixels"
    assert [p[0] for p in result["curve"]["points"]][-1] == total

    first = result["rounds"][0]["round"]
    with Services.from_settings() as services:
        client = services.label_studio.client
        project = client.find_project(regions_title(name))
        before = len(client.task_ids(project))
        assert push_round(first)["regions"]["tasks"] == len(registry.round_items(first))
        assert len(client.task_ids(project)) == before  # a re-push rebuilds the same tasks


def test_promotion_refuses_a_worse_challenger_and_one_that_fails_the_gate(champion):
    from tomoloop.flows.loop import promote
    from tomoloop.flows.pictures import artifact_name
    from tomoloop.flows.train import train_semantic

    registry, name, _, first = champion
    weak = train_semantic(
        registry.dataset(name).id,
        "unet",
        config={**TRAIN, "epochs": 1, "patches_per_epoch": 4, "seed": 7},
        options=NET,
    )["model_version"]
    refused = promote(weak, margin=0.5, fraction_tolerance=1.0)
    assert not refused["promoted"] and "does not beat the champion" in refused["reasons"][-1]
    gated = promote(weak, margin=0.0, fraction_tolerance=0.0)
    assert not gated["promoted"] and any("volume fraction" in r for r in gated["reasons"])
    winding = promote(weak, margin=0.0, fraction_tolerance=1.0, tortuosity_tolerance=0.0)
    assert not winding["promoted"] and any(
        ("pore" in r and "tortuosity" in r) or "stops connecting" in r for r in winding["reasons"]
    )
    assert registry.champion(name).id == first
    key = artifact_name("promotion", name, weak)  # the dataset's: never another's contest
    table = json.loads(_latest_artifacts([key])[key].data)
    roles = [(row["model"], row["role"]) for row in table]
    assert roles == [(weak, "challenger"), (first, "champion")]


def test_a_human_annotator_loop_stops_after_the_push_and_says_where(champion):
    from tomoloop.flows.loop import loop

    registry, name, _, _ = champion
    waiting = loop(name, rounds=2, strategy="entropy", budget=1, annotator="human", device="cpu")
    assert waiting["annotate_at"].startswith("http://127.0.0.1")
    (item,) = registry.round_items(waiting["waiting_for"])
    assert item.state == "pending" and item.ls_task_id is not None
    with pytest.raises(RegistryError, match="need the ground-truth label stacks"):
        loop(name, annotator="oracle")


def test_new_labels_trigger_a_retraining_and_a_schedule_never_piles_up_rounds(champion):
    from tomoloop.db.registry import NewAnnotation
    from tomoloop.flows.loop import al_round, retrain_on_labels
    from tomoloop.labels.masks import encode_class_mask

    registry, name, gold, _ = champion
    assert retrain_on_labels(name, threshold=2) == {"new_labels": 0, "retrained": False}
    train = registry.pool(registry.dataset(name).id)[:2]
    truth = tifffile.imread(gold)
    registry.add_annotations(
        [
            NewAnnotation(
                p.slice_id,
                Tier.ANNOTATOR,
                f"person:{p.index}",
                mask_rle=encode_class_mask(truth[p.index]),
            )
            for p in train
        ]
    )
    assert registry.new_labels(name) == 2
    done = retrain_on_labels(name, threshold=2, fraction_tolerance=1.0, device="cpu")
    assert done["retrained"] and done["new_labels"] == 2
    assert registry.new_labels(name) == 0  # the newest model trained on them

    first = al_round(name, "entropy", budget=1, max_open=1, device="cpu")
    assert first["round"] is not None
    again = al_round(name, "entropy", budget=1, max_open=1, device="cpu")
    assert again == {"round": None, "open_rounds": [first["round"]]}


def test_a_webhook_that_reaches_the_threshold_starts_the_retrain_deployment(champion, monkeypatch):
    import asyncio

    from fastapi.testclient import TestClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from tomoloop.adapters.http import create_app
    from tomoloop.adapters.labelstudio_registry import project_title, task_key
    from tomoloop.config import Settings
    from tomoloop.flows.deployments import deployment_names, deployments, start_retrain
    from tomoloop.labels.studio_json import brush_results

    registry, name, gold, _ = champion
    deployments(name)[1].apply()  # what `tomoloop serve` registers
    settings = Settings(webhook_secret="s3cret", retrain_threshold=2)
    client = TestClient(create_app(settings, on_new_labels=start_retrain))
    truth = tifffile.imread(gold)
    answers = []
    for k, p in enumerate(registry.pool(registry.dataset(name).id)[:3]):
        body = {
            "action": "ANNOTATION_CREATED",
            "annotation": {
                "id": 900 + k,
                "result": brush_results(truth[p.index], ("pore", "nmc", "cbd")),
                "updated_at": "2026-11-29T12:00:00Z",
            },
            "task": {"id": 5000 + k, "data": {"key": task_key(p.slice_id, 1)}},
            "project": {"id": 1, "title": project_title(name)},
        }
        answer = client.post(
            "/webhooks/labelstudio", json=body, headers={"X-Tomoloop-Secret": "s3cret"}
        )
        answers.append(answer.json())
    assert answers[0] == {"status": "stored"}  # one new label: below the threshold
    assert answers[1] == {"status": "stored", "retrain": "2 new labels ≥ 2"}
    assert answers[2] == {"status": "stored"}  # past the threshold: the run already asked

    async def runs():
        wanted = deployment_names(name)["retrain-on-labels"]
        async with get_client() as prefect:
            return await prefect.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[wanted]))
            )

    (run,) = asyncio.run(runs())
    assert "webhook" in run.tags and run.parameters["dataset"] == name


def _latest_artifacts(keys: list[str]) -> dict:
    """The latest Prefect artifact of each of ``keys`` that exists, by key."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    return {a.key: a for a in found}


def _assert_round_artifacts(dataset: str, rounds: list[int]) -> None:
    """Each round left its chosen-slices table and uncertainty picture in Prefect, and the
    loop its learning curve — real PNGs the Prefect UI shows."""
    import base64

    from tomoloop.flows.pictures import artifact_name

    kinds = ("chosen", "uncertainty")
    keys = [artifact_name("round", dataset, r, kind) for r in rounds for kind in kinds]
    keys.append(artifact_name("loop", dataset, "learning-curve"))
    latest = _latest_artifacts(keys)
    assert set(latest) == set(keys)
    for key, artifact in latest.items():
        if key.endswith("chosen"):
            assert artifact.type == "table"
            continue
        assert artifact.type == "image"
        prefix = "data:image/png;base64,"
        assert artifact.data.startswith(prefix)
        assert base64.b64decode(artifact.data[len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
