"""`tomoloop demo`'s flow end to end, tiny: through the real Label Studio of the session."""

import json
import os

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
]


@pytest.fixture
def api_port(label_studio_env):
    """A free port for the HTTP app the demo leaves running, stopped at teardown."""
    import socket
    from pathlib import Path

    from tomoloop.adapters.api_server import LocalApi

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port
    LocalApi(Path(os.environ["TOMOLOOP_HOME"])).down()


def test_the_demo_runs_ingest_training_rounds_and_reports(tmp_path, label_studio_env, api_port):
    from tomoloop.flows.demo import demo

    out = tmp_path / "out"
    settings_before = {k: v for k, v in os.environ.items() if k.startswith("TOMOLOOP_")}
    tiny = {"epochs": 1, "patch": 32, "batch": 4, "patches_per_epoch": 8, "overlap": 8}
    result = demo(
        str(out), rounds=1, budget=2, config=tiny, options={"base": 4, "depth": 2},
        api_port=api_port,
    )  # fmt: skip
    (done,) = result["loop"]["rounds"]
    assert done["labelled"] == 2 and done["dataset_version"] == 3  # v1 rough, v2 gold, v3 round
    assert result["loop"]["stopped"] == "1 rounds done"
    (region,) = result["new_scan"]["rounds"]  # the new scan's region round
    first, challengers = result["first_model"], [done["challenger"], region["challenger"]]
    assert [m["id"] for m in result["models"]] == [first, *challengers]
    assert [r["status"] for r in result["rounds"]] == ["closed", "closed"]
    assert 0 < region["labelled_px"] <= 2 * 32**2 and region["labelled"] <= 2  # 2 regions' worth
    assert region["dataset_version"] == 6  # v4 the new scan added, v5 its gold, v6 the round
    curve = result["new_scan"]["curve"]
    assert curve["unit"] == "pixels" and [p[0] for p in curve["points"]] == [
        0,
        region["labelled_px"],
    ]
    names = ("report.md", "al_curve.png", "uncertainty.png", "summary.json", "new_scan_curve.png")
    for name in names:
        assert (out / name).stat().st_size > 100, name
    report = (out / "report.md").read_text()
    row = f"| {done['round']} | 2 | {done['reviewed']} | {done['challenger']} | v3 |"
    assert row in report
    assert (
        f"| {region['round']} | {region['labelled']} | {region['labelled_px']} "
        f"| {region['challenger']} | {region['challenger_mIoU']:.4f} |"
    ) in report
    assert 0 <= region["challenger_mIoU"] <= 1  # the challenger's own mIoU on the new scan
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loop"] == result["loop"]
    # the ragged oracle annotator rewrote the 1-epoch model's prediction: both labels went
    # to review, and the exact oracle reviewer corrected them into tier expert
    assert done["reviewed"] == 2 and region["reviewed"] == region["labelled"]
    corrected = done["reviewed"] + region["reviewed"]
    states = summary["reviews"]["states"]
    assert {state: n for state, n in states.items() if n} == {"corrected": corrected}
    assert "model" in summary["reviews"]["reasons"] and f"Reviews: {corrected} corrected" in report
    _reviewed_regions_stay_sparse(result["dataset"])
    _backend_left_connected(result)
    assert {k: v for k, v in os.environ.items() if k.startswith("TOMOLOOP_")} == settings_before
    _random_control_ran_on_its_own_fork(result, report)


def _random_control_ran_on_its_own_fork(result: dict, report: str) -> None:
    """The random control spent the same budget on the new scan from the same champion, in
    a fork of the registry with its own Label Studio projects: the demo's registry holds
    none of its rounds or models (the model and round lists above)."""
    from tomoloop.adapters.labelstudio_registry import regions_title
    from tomoloop.config import Settings
    from tomoloop.db.registry import Registry
    from tomoloop.services.context import connect

    scan, control = result["new_scan"], result["new_scan"]["random_control"]
    (region,) = control["rounds"]
    assert control["dataset"] == f"{result['dataset']}-random"
    assert 0 < region["labelled_px"] <= 2 * 32**2
    assert [p[0] for p in control["curve"]["points"]] == [0, region["labelled_px"]]
    assert control["mIoU_history"][0] == pytest.approx(scan["mIoU_history"][0], abs=1e-6)
    fork = Registry.from_url(f"sqlite:///{control['registry']}/registry.sqlite", create=False)
    rounds = [r for r, _ in fork.rounds() if r.dataset == control["dataset"]]
    assert [(r.id, r.strategy, r.status) for r in rounds][-1] == (
        region["round"],
        "random",
        "closed",
    )
    assert fork.model(region["challenger"]).parent_id == result["loop"]["champion"]
    client = connect(Settings()).client
    theirs = client.find_project(regions_title(control["dataset"]))
    assert theirs is not None and theirs != client.find_project(regions_title(result["dataset"]))
    demo_registry = Registry.from_url(Settings().registry_url)
    assert control["dataset"] not in {d.name for d in demo_registry.datasets()}
    assert control["dataset"] not in {m.name for m in demo_registry.models()}
    assert "Random control, the same budget" in report
    ours, random = scan["curve"]["points"][1], control["curve"]["points"][1]
    assert f"| 1 | {ours[0]} | {ours[1]:.4f} | {random[0]} | {random[1]:.4f} |" in report


def _reviewed_regions_stay_sparse(dataset: str) -> None:
    """The reviewer corrected the new scan's region labels inside their regions only: the
    expert labels of its training slices are as sparse as the regions asked for."""
    from tomoloop.config import Settings
    from tomoloop.db.registry import Registry
    from tomoloop.labels.tiers import Tier

    registry = Registry.from_url(Settings().registry_url)
    scan = registry.volume_named(f"{dataset}-new-scan")
    reviewed = [
        a
        for a in registry.best_annotations(scan.id)
        if a.tier == Tier.EXPERT and not a.source.startswith("gold:")
    ]
    assert reviewed and all(0 < a.labelled_px <= 32**2 for a in reviewed)


def _backend_left_connected(result: dict) -> None:
    """The demo's project asks the running HTTP app for predictions and shows the
    champion's: every task holds one."""
    from tomoloop.adapters.labelstudio import LabelStudioClient
    from tomoloop.adapters.labelstudio_registry import project_title
    from tomoloop.config import Settings
    from tomoloop.db.registry import Registry
    from tomoloop.services.context import connect

    client: LabelStudioClient = connect(Settings()).client
    project = client.find_project(project_title(result["dataset"]))
    (backend,) = client.sdk.ml.list(project=project)
    assert backend.url == result["ml_backend"] and backend.state == "CO"
    champion = Registry.from_url(Settings().registry_url).champion(result["dataset"])
    champion = str(champion.id)
    assert client.sdk.projects.get(id=project).model_version == champion
    for task in client.task_ids(project).values():
        versions = [p.model_version for p in client.sdk.predictions.list(task=task)]
        assert champion in versions


def test_with_a_human_annotator_the_demo_stops_after_the_push(tmp_path, label_studio_env, api_port):
    from tomoloop.flows.demo import demo

    tiny = {"epochs": 1, "patch": 32, "batch": 4, "patches_per_epoch": 8, "overlap": 8}
    waiting = demo(
        str(tmp_path / "out"),
        name="human-demo",
        budget=2,
        config=tiny,
        options={"base": 4, "depth": 2},
        annotator="human",
        api_port=api_port,
    )
    assert waiting["annotate_at"].startswith("http://127.0.0.1") and waiting["waiting_for"]
    assert waiting["dataset"] == "human-demo"
    assert not (tmp_path / "out" / "report.md").exists()
    _backend_left_connected(waiting)
