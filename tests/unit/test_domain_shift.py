import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from tomoloop.active.domain_shift import (
    domain_shift,
    patch_pixels,
    pseudo_labels,
    summarise,
    with_replay,
)
from tomoloop.active.label_efficiency import area_under
from tomoloop.active.shift_setup import (
    DEFAULT_ARMS,
    Arm,
    BenchmarkError,
    ShiftSetup,
    parse_arms,
    parse_pair,
    quick,
    shift_data,
)
from tomoloop.labels.phases import IGNORE, PhaseMap
from tomoloop.report.plots import plot_domain_shift
from tomoloop.stacks.opener import open_stack
from tomoloop.training.data import LabelledSlice

PHASES = PhaseMap.parse("pore=0,nmc=1,cbd=2")


def test_pixels_to_95_is_read_against_the_gain_on_the_mean_curve():
    fast = [[(0, 0.5), (1000, 0.68), (2000, 0.70)], [(0, 0.5), (1000, 0.70), (2000, 0.70)]]
    slow = [[(0, 0.5), (1000, 0.55), (2000, 0.60)], [(0, 0.5), (1000, 0.55), (2000, 0.62)]]
    doc = summarise(0.5, 0.7, {"fast": fast, "slow": slow})
    assert doc["valid"] is True
    assert doc["gain"] == pytest.approx(0.2) and doc["target_miou"] == pytest.approx(0.69)
    # Mean of the fast seeds at 1000 px is 0.69: it reaches 95 % of the gain there.
    assert doc["strategies"]["fast"]["pixels_to_95"] == 1000
    assert doc["strategies"]["slow"]["pixels_to_95"] is None
    assert doc["strategies"]["fast"]["pixels_to_95_interpolated"] == pytest.approx(1000)
    assert doc["strategies"]["slow"]["pixels_to_95_interpolated"] is None
    for name, seeds in (("fast", fast), ("slow", slow)):
        result = doc["strategies"][name]
        assert result["auc"] == pytest.approx(area_under([tuple(p) for p in result["curve"]]))
        assert result["seeds"] == [[list(p) for p in c] for c in seeds]
    assert doc["strategies"]["fast"]["auc"] > doc["strategies"]["slow"]["auc"]
    json.dumps(doc)


def test_a_crossing_holds_only_when_the_mean_curve_stays_at_the_level():
    # seeds' mean: 0.60, 0.70 (reached), 0.66 (fell back), 0.70, 0.71 (held from 3000)
    seeds = [[(0, 0.5), (1000, 0.72), (2000, 0.66), (3000, 0.70), (4000, 0.70)],
             [(0, 0.5), (1000, 0.68), (2000, 0.66), (3000, 0.70), (4000, 0.72)]]  # fmt: skip
    doc = summarise(0.5, 0.7, {"bald": seeds, "flat": [[(0, 0.5), (4000, 0.6)]]})
    bald = doc["strategies"]["bald"]
    assert (bald["pixels_to_95"], bald["pixels_to_95_held"]) == (1000, 3000)
    assert doc["strategies"]["flat"]["pixels_to_95_held"] is None
    invalid = summarise(0.5, 0.52, {"bald": seeds})["strategies"]["bald"]
    assert invalid["pixels_to_95_held"] is None and invalid["pixels_to_95_interpolated"] is None


def test_auc_covers_the_same_labelled_range_for_every_arm_and_each_seed():
    # Whole slices label 16,384 px a round, regions 8,192: the slice arm's plateau beyond
    # 16,384 px must not raise its AUC over the region arm's, which is as good up to there.
    slices = [[(0, 0.5), (16384, 0.6), (32768, 0.7)]] * 2
    regions = [[(0, 0.5), (8192, 0.55), (16384, 0.6)], [(0, 0.5), (8192, 0.57), (16384, 0.62)]]
    doc = summarise(0.5, 0.7, {"random/slice": slices, "bald/region": regions})
    assert doc["auc_pixels"] == 16384
    arm_slices, arm_regions = doc["strategies"]["random/slice"], doc["strategies"]["bald/region"]
    assert arm_slices["auc"] == pytest.approx(0.55)  # (0.5 + 0.6) / 2 over 0..16,384
    assert arm_regions["auc_seeds"] == [pytest.approx(0.55), pytest.approx(0.565)]
    assert arm_regions["auc"] == pytest.approx(0.5575)
    assert arm_regions["auc"] > arm_slices["auc"]  # over their own ranges: 0.5575 against 0.6


def test_a_benchmark_without_gain_is_not_valid_and_no_arm_claims_anything():
    curves = {"bald": [[(0, 0.70), (500, 0.74)]], "random": [[(0, 0.70), (500, 0.71)]]}
    doc = summarise(0.70, 0.74, curves)  # gain 0.04 < 0.05
    assert doc["valid"] is False
    assert all(r["pixels_to_95"] is None for r in doc["strategies"].values())
    assert doc["strategies"]["bald"]["curve"] == [[0, 0.70], [500, 0.74]]
    assert summarise(0.70, 0.75, curves)["valid"] is True
    assert summarise(0.70, 0.75, curves)["strategies"]["bald"]["pixels_to_95"] is None
    assert summarise(0.70, 0.60, curves)["valid"] is False


def test_the_default_arms_are_the_controls_the_uncertainty_arms_and_self_training():
    arms = parse_arms(DEFAULT_ARMS)
    assert [a.name for a in arms] == [
        "random/slice",
        "random/region",
        "foreground_random/region",
        "entropy/region",
        "bald/region",
        "hybrid/region",
        "bald+self/region",
    ]
    by_slice = parse_arms(DEFAULT_ARMS, "slice")
    assert by_slice[:2] == (Arm("random", "slice"), Arm("foreground_random", "slice"))
    assert len(by_slice) == 6 and by_slice[-1] == Arm("bald", "slice", True)
    assert parse_arms("coreset/region,bald+self", "slice") == (
        Arm("coreset", "region"),
        Arm("bald", "slice", True),
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("random/cube", "unit 'cube'"),
        ("walrus", "unknown strategy 'walrus'"),
        ("disagreement", "unknown strategy"),
        (" , ", "no arm"),
    ],
)
def test_a_bad_arm_is_refused_with_what_to_write(text, says):
    with pytest.raises(BenchmarkError, match=says):
        parse_arms(text)


def test_a_source_is_a_gray_and_a_label_stack_joined_by_a_colon():
    assert parse_pair("a/g.tif:b/l.tif") == (Path("a/g.tif"), Path("b/l.tif"))
    with pytest.raises(BenchmarkError, match="pairs read local files, not URLs"):
        parse_pair("s3://b/g.tif:s3://b/l.tif")
    for bad in ("gray.tif", ":l.tif", "g.tif:"):
        with pytest.raises(BenchmarkError, match="GRAY:LABELS"):
            parse_pair(bad)


def test_a_pair_of_sources_that_hold_colons_splits_where_both_exist(tmp_path):
    h5, raw = tmp_path / "scan.h5", tmp_path / "l.raw"
    h5.touch()
    raw.touch()
    gray, labels = f"{h5}:/exchange/data", f"{raw}:2x3x4:uint8"
    assert parse_pair(f"{gray}:{labels}") == (Path(gray), Path(labels))
    assert parse_pair(f"{gray}:{h5}:/labels") == (Path(gray), Path(f"{h5}:/labels"))


def test_a_setup_refuses_empty_rounds_and_tiny_regions():
    with pytest.raises(BenchmarkError, match="rounds 0"):
        ShiftSetup(rounds=0)
    with pytest.raises(BenchmarkError, match="region 8"):
        ShiftSetup(region=8)
    with pytest.raises(BenchmarkError, match="budget_px 100 must be ≥ 1024"):
        ShiftSetup(budget_px=100)  # less than one 32² region: region arms would ask nothing
    assert ShiftSetup(parse_arms("random/slice"), budget_px=100).budget_px == 100
    with pytest.raises(BenchmarkError, match=r"budget_growth 0\.5 must be ≥ 1"):
        ShiftSetup(budget_growth=0.5)  # rounds that shrink


@pytest.mark.parametrize(
    ("growth", "budgets"),
    [(1.0, [1024, 1024, 1024, 1024]), (2.0, [1024, 2048, 4096, 8192]),
     (1.5, [1024, 1536, 2304, 3456])],
)  # fmt: skip
def test_each_round_may_label_growth_times_the_pixels_of_the_one_before(growth, budgets):
    setup = ShiftSetup(budget_px=1024, budget_growth=growth)
    assert [setup.round_budget(r) for r in range(4)] == budgets


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_region_arm_spends_a_budget_that_doubles_each_round(data):
    setup = quick(ShiftSetup(parse_arms("random"), budget_px=256, budget_growth=2, region=16))
    setup = replace(setup, rounds=3)  # quick runs two
    doc = domain_shift(data, setup)
    xs = [n for n, _ in doc["strategies"]["random/region"]["curve"]]
    added = np.diff(xs).tolist()
    assert len(added) == 3 and all(0 < a <= 256 * 2**r for r, a in enumerate(added)), xs
    # the third round labels more than the second could have (16² tiles, 8 px high at the
    # bottom: a 1024 px budget leaves less than one tile unspent)
    assert added[2] > 512 and doc["budget_growth"] == 2


def _pair(folder, labels, name, offset):
    rng = np.random.default_rng(offset)
    gray = np.clip(labels * 80 + 20 + offset + rng.normal(0, 6, labels.shape), 0, 255)
    tifffile.imwrite(folder / f"{name}_gray.tif", gray.astype(np.uint8))
    tifffile.imwrite(folder / f"{name}_labels.tif", labels)
    return folder / f"{name}_gray.tif", folder / f"{name}_labels.tif"


@pytest.fixture
def data(tmp_path, electrode_volume):
    source = _pair(tmp_path, electrode_volume, "source", 0)
    target = _pair(tmp_path, electrode_volume[:, ::-1].copy(), "target", 30)
    with (
        open_stack(source[0]) as sg,
        open_stack(source[1]) as sl,
        open_stack(target[0]) as tg,
        open_stack(target[1]) as tl,
    ):
        return shift_data([(sg, sl)], (tg, tl), PHASES)


def test_shift_data_refuses_no_source(tmp_path, electrode_volume):
    target = _pair(tmp_path, electrode_volume, "target", 0)
    with (
        open_stack(target[0]) as g,
        open_stack(target[1]) as lab,
        pytest.raises(BenchmarkError, match="--source"),
    ):
        shift_data([], (g, lab), PHASES)


def _labelled(value: int) -> LabelledSlice:
    return LabelledSlice(np.full((4, 4), value / 10, np.float32), np.full((4, 4), value, np.uint8))


def test_replay_gives_the_sources_as_many_slices_as_the_target_has_and_keeps_the_target():
    target = [_labelled(1), _labelled(2)]
    sources = [_labelled(v) for v in range(3, 9)]
    mixed = with_replay(target, sources, np.random.default_rng(0), patch=16)
    assert mixed[:2] == target and len(mixed) == 4
    drawn = [s.labels[0, 0] for s in mixed[2:]]
    assert len(set(drawn)) == 2 and set(drawn) <= set(range(3, 9))  # no slice twice
    assert [s.weight for s in mixed[2:]] == [1.0, 1.0]  # dense target: sources as they were
    many = [_labelled(1)] * 9  # more target slices than sources: every source once
    assert sorted(
        s.labels[0, 0] for s in with_replay(many, sources, np.random.default_rng(0), 16)[9:]
    ) == list(range(3, 9))


def _sparse(painted: int, side: int = 64) -> LabelledSlice:
    labels = np.full((side, side), IGNORE, np.uint8)
    labels.ravel()[:painted] = 1
    return LabelledSlice(np.zeros((side, side), np.float32), labels, weight=2.0)


def test_replay_weighs_a_source_patch_as_a_patch_of_the_sparse_target():
    # target patches of 32² hold 256 and 768 labelled pixels (512 on average), a dense
    # source patch 1,024: each source pixel weighs half, so a patch of either weighs the
    # same in the loss (pixels x weight, the loss's denominator)
    target = [_sparse(256), _sparse(768)]
    sources = [LabelledSlice(np.zeros((64, 64), np.float32), np.ones((64, 64), np.uint8), 2.0)]
    mixed = with_replay(target, sources, np.random.default_rng(0), patch=32)
    assert mixed[:2] == target and mixed[2].weight == pytest.approx(1.0)
    assert patch_pixels(target, 32) * 2.0 == patch_pixels(mixed[2:], 32) * mixed[2].weight
    map_weight = replace(sources[0], weight=np.full((64, 64), 4.0, np.float32))
    (scaled,) = with_replay(target, [map_weight], np.random.default_rng(0), 32)[2:]
    assert np.array_equal(scaled.weight, np.full((64, 64), 2.0, np.float32))


@pytest.mark.usefixtures("one_thread")
def test_pseudo_labels_never_cover_what_a_person_painted(data):
    setup = quick(ShiftSetup(region=16))
    from tomoloop.active.domain_shift import _build

    torch.manual_seed(0)
    model = _build(data, setup)
    painted = np.full(data.target.pool[0].labels.shape, IGNORE, np.uint8)
    painted[:16, :16] = data.target.pool[0].labels[:16, :16]
    relaxed = replace(setup, self_training=replace(setup.self_training, floor=0.0, keep=1.0))
    slices = pseudo_labels(model, data, {0: painted}, relaxed)
    assert slices and all(s.weight == setup.self_training.weight for s in slices)
    first = next(s for s in slices if s.image is data.target.pool[0].image)
    assert (first.labels[:16, :16] == IGNORE).all()
    assert (first.labels[16:] != IGNORE).all()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_every_arm_starts_from_the_sources_model_and_spends_its_pixel_budget(data, tmp_path):
    arms = parse_arms("random/slice,random,bald+self,hybrid")
    setup = quick(ShiftSetup(arms, rounds=2, budget_px=2 * 16 * 16, region=16))
    doc, seen = _watched(data, setup)
    assert seen == [(doc["initial_miou"], doc["full_data_miou"])] + [(a.name, 0) for a in arms]
    slice_px = data.target.pool[0].labels.size
    for name, result in doc["strategies"].items():
        xs = [n for n, _ in result["curve"]]
        assert result["curve"][0] == [0, doc["initial_miou"]]
        if name == "random/slice":
            assert xs == [0, slice_px, 2 * slice_px]  # at least one whole slice a round
        else:  # 512 px a round at most; the bottom row of 16² tiles is 8 px high
            assert len(xs) == 3 and 0 < xs[1] <= 512 < xs[2] <= 1024
        assert result["seconds"] > 0
    assert doc["valid"] == (doc["full_data_miou"] - doc["initial_miou"] >= 0.05)
    assert doc["full_data_seeds"] == [doc["full_data_miou"]]  # one seed: the mean is its own
    assert doc["initial_seeds"] == [doc["initial_miou"]] and 0 <= doc["sources_only_miou"] <= 1
    assert doc["sources_only_seeds"] == [doc["sources_only_miou"]]
    assert plot_domain_shift(doc, tmp_path / "shift.png").stat().st_size > 0
    json.dumps(doc)


@pytest.mark.slow  # the benchmark twice, once in two worker processes
@pytest.mark.usefixtures("one_thread")
def test_worker_processes_give_the_same_document_as_one_process(data):
    setup = quick(ShiftSetup(parse_arms("random/slice,bald"), rounds=1, budget_px=512, region=16))
    alone = domain_shift(data, setup)
    side_by_side, seen = _watched(data, setup, workers=2)
    for document in (alone, side_by_side):
        for result in document["strategies"].values():
            del result["seconds"]
    assert side_by_side == alone  # every figure, curve and seed, to the last bit
    assert sorted(seen, key=str) == sorted(
        [(alone["initial_miou"], alone["full_data_miou"]), ("random/slice", 0), ("bald/region", 0)],
        key=str,
    )


def _watched(data, setup, workers=1):
    """The benchmark's document, and its calls back in order: (initial, full) and (arm, seed)."""
    seen = []
    document = domain_shift(
        data,
        setup,
        on_curve=lambda *a: seen.append(a[:2]),
        on_reference=lambda *a: seen.append(a),
        workers=workers,
    )
    return document, seen


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "tomoloop.cli", "benchmark", "al", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize(
    ("mode", "other", "says"),
    [
        (["--source", "a:b", "--target", "c:d"], ["--epochs", "1", "--patch", "32"],
         "--epochs, --patch only apply with --gray/--labels, not with --source/--target"),
        (["--gray", "g.tif", "--labels", "l.tif"], ["--region", "16", "--quick"],
         "--region, --quick only apply with --source/--target, not with --gray/--labels"),
    ],
)  # fmt: skip
def test_benchmark_al_refuses_the_options_of_the_other_mode_before_any_work(mode, other, says):
    from typer.testing import CliRunner

    from tomoloop.cli import app
    from tomoloop.errors import TomoloopError

    done = CliRunner().invoke(app, ["benchmark", "al", "--phases", "pore=0,nmc=1", *mode, *other])
    assert isinstance(done.exception, TomoloopError) and says in str(done.exception)


@pytest.mark.slow  # two CLI processes: over 20 s on a loaded machine
def test_the_cli_refuses_a_target_without_sources_and_a_pair_without_colon(tmp_path):
    bad = _cli("--phases", "pore=0,nmc=1,cbd=2", "--target", "gray.tif")
    assert bad.returncode == 2 and "GRAY:LABELS" in bad.stderr and "Traceback" not in bad.stderr
    lonely = _cli("--phases", "pore=0,nmc=1,cbd=2", "--target", "g.tif:l.tif")
    assert lonely.returncode == 2 and "--source" in lonely.stderr


@pytest.mark.slow  # starts the benchmark and its workers
def test_killing_benchmark_al_ends_its_worker_processes(tmp_path, electrode_volume):
    source = _pair(tmp_path, electrode_volume, "source", 0)
    target = _pair(tmp_path, electrode_volume[:, ::-1].copy(), "target", 30)
    cli = subprocess.Popen(
        [
            sys.executable, "-m", "tomoloop.cli", "benchmark", "al",
            "--phases", "pore=0,nmc=1,cbd=2", "--source", f"{source[0]}:{source[1]}",
            "--target", f"{target[0]}:{target[1]}", "--strategies", "random/slice",
            "--seeds", "2", "--rounds", "1", "--workers", "2", "--device", "cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while len(_workers(cli.pid)) < 2 and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _workers(cli.pid)
    assert len(workers) == 2, "the benchmark's workers never started"
    cli.kill()  # -9: no clean-up of its own
    cli.wait()
    deadline = time.monotonic() + 15
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:  # not to leave them running when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, "workers outlived the killed benchmark"


def _workers(pid: int) -> list[int]:
    """The worker processes ``pid`` spawned (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = children.read_text().split() if children.exists() else []
    return [int(c) for c in found if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    """``pid`` runs (exists and is not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow  # trains networks
def test_benchmark_al_quick_domain_shift_prints_the_issue_document(tmp_path, electrode_volume):
    source = _pair(tmp_path, electrode_volume, "source", 0)
    target = _pair(tmp_path, electrode_volume[:, ::-1].copy(), "target", 30)
    result = _cli(
        "--phases", "pore=0,nmc=1,cbd=2", "--source", f"{source[0]}:{source[1]}",
        "--target", f"{target[0]}:{target[1]}", "--strategies", "random/slice,bald,bald+self",
        "--region", "16", "--budget-px", "512", "--budget-growth", "2", "--quick",
        "--device", "cpu", "--plot", tmp_path / "shift.png", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"initial_miou", "full_data_miou", "valid", "strategies"} <= set(doc)
    assert doc["replay"] is True  # the default: fine-tunes replay the sources
    assert (doc["budget_px"], doc["budget_growth"]) == (512, 2)
    reference = f"start {doc['initial_miou']:.4f}, all target labels "
    assert reference + f"{doc['full_data_miou']:.4f}" in result.stderr  # before the arms' lines
    assert result.stderr.index(reference) < result.stderr.index("random/slice seed 0")
    assert set(doc["strategies"]) == {"random/slice", "bald/region", "bald+self/region"}
    gain = doc["full_data_miou"] - doc["initial_miou"]
    assert doc["valid"] == (gain >= 0.05)
    goal = doc["initial_miou"] + 0.95 * gain
    for result in doc["strategies"].values():
        assert {"pixels_to_95", "auc", "curve"} <= set(result)
        reached = [n for n, m in result["curve"] if m >= goal]
        assert result["pixels_to_95"] == (reached[0] if doc["valid"] and reached else None)
        assert result["curve"][0] == [0, doc["initial_miou"]] and len(result["curve"]) == 3
    assert (tmp_path / "shift.png").stat().st_size > 1000


def test_benchmark_al_refuses_rounds_that_shrink(tmp_path, electrode_volume):
    from typer.testing import CliRunner

    from tomoloop.cli import app

    source = _pair(tmp_path, electrode_volume, "source", 0)
    target = _pair(tmp_path, electrode_volume, "target", 30)
    done = CliRunner().invoke(
        app,
        ["benchmark", "al", "--phases", "pore=0,nmc=1,cbd=2",
         "--source", f"{source[0]}:{source[1]}", "--target", f"{target[0]}:{target[1]}",
         "--budget-growth", "0.5"],
    )  # fmt: skip
    assert isinstance(done.exception, BenchmarkError)
    assert "budget_growth 0.5 must be ≥ 1" in str(done.exception)


@pytest.mark.usefixtures("one_thread")
def test_pseudo_labels_leave_out_the_regions_labelled_this_round(data, monkeypatch):
    import tomoloop.active.domain_shift as shift

    seen = []
    monkeypatch.setattr(shift, "fine_tune", lambda *a, **k: None)
    monkeypatch.setattr(shift, "_test_miou", lambda *a: 0.5)
    real = shift.pseudo_labels
    monkeypatch.setattr(
        shift,
        "pseudo_labels",
        lambda m, d, labels, s: seen.append(dict(labels)) or real(m, d, labels, s),
    )
    setup = quick(
        ShiftSetup(parse_arms("random+self"), rounds=1, budget_px=256, region=16, replay=False)
    )  # the target alone: the --no-replay path
    torch.manual_seed(0)
    start = shift.Start(shift._state(shift._build(data, setup)), 0.5, 0.5)
    curve = shift.arm_curve(setup.arms[0], 0, data, setup, start)
    assert curve[1][0] == 256
    assert shift.labelled_count(seen[0]) == 256  # this round's region is already known


@pytest.mark.usefixtures("one_thread")
def test_a_round_ends_with_its_best_epoch_even_below_the_weights_it_started_from(
    data, monkeypatch
):
    import tomoloop.active.domain_shift as shift
    from tomoloop.training.trainer import TrainResult

    def ruin(module, *args, **kwargs):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(1.0)
        return TrainResult([], 1, -1.0, False, 0)

    setup = quick(ShiftSetup(region=16))
    torch.manual_seed(0)
    model = shift._build(data, setup)
    before = shift._state(model)
    monkeypatch.setattr(shift, "train", ruin)
    worse = shift.fine_tune(model, data.target.pool, data, setup.fine_tune, setup)
    after = model.module.state_dict()
    assert all(torch.equal(before[k] + 1.0, after[k]) for k, _ in model.module.named_parameters())
    assert not worse.beat_start and worse.epoch_val == () and 0 <= worse.start_val <= 1


@pytest.mark.usefixtures("one_thread")
def test_each_round_starts_from_the_best_val_epoch_of_the_round_before(data):
    import tomoloop.active.domain_shift as shift

    setup = quick(ShiftSetup(parse_arms("random"), rounds=2, budget_px=256, region=16))
    torch.manual_seed(0)
    start = shift.Start(shift._state(shift._build(data, setup)), 0.5, 0.5)
    seen = []
    curve = shift.arm_curve(setup.arms[0], 0, data, setup, start, lambda *a: seen.append(a))
    assert [r for r, _, _ in seen] == [0, 1]
    assert [test for _, _, test in seen] == [m for _, m in curve[1:]]
    first, second = seen[0][1], seen[1][1]
    assert len(first.epoch_val) == setup.fine_tune.epochs  # quick: no early stop in 2
    assert second.start_val == pytest.approx(max(first.epoch_val), abs=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_the_initial_model_is_the_sources_model_fine_tuned_on_the_sources_with_target_val(
    data, monkeypatch
):
    import tomoloop.active.domain_shift as shift

    calls, scores = [], iter([0.4, 0.45])
    monkeypatch.setattr(
        shift,
        "fine_tune",
        lambda model, slices, d, config, setup: calls.append((config.seed, slices)),
    )
    monkeypatch.setattr(shift, "_test_miou", lambda *a: next(scores))
    setup = quick(ShiftSetup(region=16))
    start = shift.initial_model(2, data, setup)
    assert calls == [(2000 + shift.LABEL_FREE_SEED, data.source_train)]  # no target label
    assert (start.miou, start.sources_miou) == (0.45, 0.4)
    assert set(start.weights) == set(shift._build(data, setup).module.state_dict())


@pytest.mark.usefixtures("one_thread")
def test_the_full_data_reference_is_an_arm_with_every_label_from_its_first_round(
    data, monkeypatch
):
    import tomoloop.active.domain_shift as shift

    calls = []

    def scripted(model, slices, d, config, setup):
        calls.append((config.seed, len(slices)))
        return shift.FineTune(0.5, ())

    monkeypatch.setattr(shift, "fine_tune", scripted)
    monkeypatch.setattr(shift, "_test_miou", lambda *a: 0.6)
    setup = replace(quick(ShiftSetup(region=16, replay=False)), rounds=3)  # quick caps at 2
    torch.manual_seed(0)
    start = shift._state(shift._build(data, setup))
    assert shift.full_data_model(3, start, data, setup) == 0.6
    # three fine-tunings, with the arms' seeds, on the whole pool each time
    assert calls == [(3000, len(data.target.pool)), (3001, len(data.target.pool)),
                     (3002, len(data.target.pool))]  # fmt: skip


@pytest.mark.usefixtures("one_thread")
def test_an_arm_chooses_the_same_regions_whatever_the_process_drew_before(data, monkeypatch):
    """BALD's dropout masks come from torch's generator: an arm run in a worker after other
    jobs must choose what it chooses alone, or --workers changes the figures."""
    import tomoloop.active.domain_shift as shift

    chosen: list[dict] = []
    real = shift.labelled_count
    monkeypatch.setattr(
        shift, "labelled_count", lambda labels: chosen.append(dict(labels)) or real(labels)
    )
    setup = quick(ShiftSetup(parse_arms("bald"), rounds=2, budget_px=1024, region=16))
    torch.manual_seed(0)
    start = shift.Start(shift._state(shift._build(data, setup)), 0.5, 0.5)
    for before in (1, 2):
        torch.manual_seed(before)  # another job ran here first
        shift.arm_curve(setup.arms[0], 0, data, setup, start)
    alone, after_others = chosen[:2], chosen[2:]
    for a, b in zip(alone, after_others, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
