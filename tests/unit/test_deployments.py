from pathlib import Path

import yaml

from tomoloop.flows.deployments import Schedule, deployment_names, deployments

ROOT = Path(__file__).resolve().parents[2]


def _declared(dataset: str) -> dict[str, dict]:
    text = (ROOT / "prefect.yaml").read_text().replace("{{ $TOMOLOOP_DATASET }}", dataset)
    return {d["name"]: d for d in yaml.safe_load(text)["deployments"]}


def test_prefect_yaml_declares_what_tomoloop_serve_runs():
    declared = _declared("nmc")
    served = {d.name: d for d in deployments("nmc")}
    assert set(declared) == set(served) == set(deployment_names("nmc").values())
    for name, d in served.items():
        spec = declared[name]
        assert spec["entrypoint"] == d.entrypoint, name
        assert spec["parameters"] == d.parameters, name
        (schedule,) = spec["schedules"]
        (actual,) = d.schedules
        if "cron" in schedule:
            assert actual.schedule.cron == schedule["cron"]
        else:
            assert actual.schedule.interval.total_seconds() == schedule["interval"]
        assert spec.get("concurrency_limit") == d.concurrency_limit
    assert declared["retrain-on-labels-nmc"]["work_pool"]["name"] == "gpu"


def test_schedules_follow_the_settings():
    when = Schedule(round_cron="30 6 * * 1", check_minutes=1, threshold=3, budget=2)
    by_name = {d.name: d for d in deployments("cbd-study", when)}
    rounds = by_name["al-round-cbd-study"]
    assert rounds.schedules[0].schedule.cron == "30 6 * * 1"
    assert rounds.parameters == {
        "dataset": "cbd-study",
        "strategy": "bald",
        "budget": 2,
        "max_open": 1,
    }
    check = by_name["retrain-on-labels-cbd-study"]
    assert check.parameters["threshold"] == 3 and check.concurrency_limit == 1
    assert check.schedules[0].schedule.interval.total_seconds() == 60
    assert by_name["sync-cbd-study"].concurrency_limit == 1  # one sync pushes each review


def test_a_region_schedule_opens_region_rounds_with_its_pixel_budget():
    when = Schedule(unit="region", region=24, budget_px=2000, min_distance=30.0)
    rounds = {d.name: d for d in deployments("nmc", when)}["al-round-nmc"]
    assert rounds.parameters == {
        "dataset": "nmc",
        "strategy": "bald",
        "budget": 8,
        "max_open": 1,
        "unit": "region",
        "region": 24,
        "budget_px": 2000,
        "min_distance": 30.0,
    }
