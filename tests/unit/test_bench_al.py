"""``bench/al_efficiency.py``'s reading of a benchmark document: each arm's AUC against the
best control seed by seed, the issue's ratios, and a saved run read again."""

import json

import pytest
from conftest import load_bench

from tomoloop.active.domain_shift import summarise
from tomoloop.active.label_efficiency import Split


@pytest.fixture(scope="module")
def bench():
    return load_bench("al_efficiency")


def test_each_arm_is_compared_seed_by_seed_with_the_control_of_the_highest_auc(bench):
    # Seed 1 starts far lower than seed 0 for every arm (its initial model): BALD is ahead
    # of the best control by 0.02 on both seeds although its seeds' spread is 0.2.
    slices = [[(0, 0.6), (100, 0.7)], [(0, 0.4), (100, 0.5)]]
    regions = [[(0, 0.6), (100, 0.65)], [(0, 0.4), (100, 0.45)]]
    bald = [[(0, 0.6), (100, 0.74)], [(0, 0.4), (100, 0.54)]]
    doc = summarise(0.5, 0.7, {"random/slice": slices, "random/region": regions, "bald": bald})
    paired = bench.against_best_control(doc)
    assert set(paired) == {"random/region", "bald"}
    assert paired["bald"]["control"] == "random/slice"
    assert paired["bald"]["difference"] == pytest.approx(0.02)
    assert paired["bald"]["standard_error"] == pytest.approx(0.0, abs=1e-12)
    assert (paired["bald"]["seeds_ahead"], paired["bald"]["seeds"]) == (2, 2)
    assert paired["random/region"]["difference"] == pytest.approx(-0.025)
    assert paired["random/region"]["seeds_ahead"] == 0


def test_one_seed_has_no_standard_error_and_no_control_no_comparison(bench):
    doc = summarise(
        0.5, 0.7, {"random/region": [[(0, 0.5), (10, 0.6)]], "bald": [[(0, 0.5), (10, 0.7)]]}
    )
    assert bench.against_best_control(doc)["bald"]["standard_error"] is None
    assert bench.against_best_control(summarise(0.5, 0.7, {"bald": [[(0, 0.5)]]})) == {}


def test_the_ratios_count_a_crossing_and_a_crossing_that_holds(bench):
    # BALD regions touch the level (0.69) at 100 px and fall back; they hold it from 300 px.
    # Whole slices reach it at 200 px and hold it; random regions never reach it.
    bald = [[(0, 0.5), (100, 0.70), (200, 0.68), (300, 0.70), (400, 0.71)]]
    slices = [[(0, 0.5), (200, 0.69), (400, 0.72)]]
    regions = [[(0, 0.5), (100, 0.6), (200, 0.6), (300, 0.6), (400, 0.6)]]
    doc = summarise(
        0.5, 0.7, {"random/slice": slices, "random/region": regions, "bald/region": bald}
    )
    assert bench.ratios(doc) == {
        "best_arm_vs_best_control": 0.5,  # 100 / 200
        "best_region_vs_best_slice": 0.5,
        "best_arm_vs_best_control_held": 1.5,  # 300 / 200
        "best_region_vs_best_slice_held": 1.5,
        # BALD's crossing read between 0 px (0.5) and 100 px (0.70): 95 px; slices' on 200
        "best_arm_vs_best_control_interpolated": pytest.approx(0.475),
        "best_region_vs_best_slice_interpolated": pytest.approx(0.475),
    }
    doc["strategies"]["random/slice"]["pixels_to_95_held"] = None
    assert bench.ratios(doc)["best_arm_vs_best_control_held"] is None


def _saved_run(bench, curves):
    """A document as a run writes it: :func:`summarise`'s, the run's figures, the readings."""
    document = summarise(0.5, 0.7, curves) | {
        "sources_only_miou": 0.4,
        "sources_only_seeds": [0.4],
        "initial_seeds": [0.5],
        "full_data_seeds": [0.7],
    }
    for result in document["strategies"].values():
        result["seconds"] = 10.0
    return bench.with_readings(document)


CURVES = {
    "random/slice": [[(0, 0.5), (200, 0.69), (400, 0.72)]],
    "bald/region": [[(0, 0.5), (100, 0.70), (200, 0.71)]],
}


def test_a_saved_run_reads_again_as_it_was_written_and_its_file_is_left_alone(bench, tmp_path):
    written = _saved_run(bench, CURVES)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(written))
    before = path.read_bytes()
    assert bench.reread(path) == json.loads(before)
    assert path.read_bytes() == before


def test_a_run_saved_before_a_reading_existed_gains_it_when_read_again(bench, tmp_path, capsys):
    older = _saved_run(bench, CURVES)
    for result in older["strategies"].values():
        del result["pixels_to_95_interpolated"]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(older))
    document = bench.reread(path)
    assert document["strategies"]["bald/region"]["pixels_to_95_interpolated"] == pytest.approx(95)
    assert document["best_arm_vs_best_control_interpolated"] == pytest.approx(0.475)
    bench.show(document)
    bald = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("bald"))
    assert bald.split()[1:4] == ["100", "100", "95"]  # to 95 %, held from, between


def test_a_run_saved_before_the_seed_figures_is_refused_naming_them_with_exit_2(
    bench, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(summarise(0.5, 0.7, {"bald": [[(0, 0.5)]]})))
    with pytest.raises(ValueError, match="has no sources_only_miou, sources_only_seeds"):
        bench.reread(path)
    monkeypatch.setattr("sys.argv", ["al_efficiency.py", "--reread", str(path)])
    with pytest.raises(SystemExit) as stopped:
        bench.main()
    assert stopped.value.code == 2
    assert "run its scenario again" in capsys.readouterr().err.splitlines()[-1]


def test_the_shifted_slices_are_counted_in_each_part_of_the_split(bench):
    split = Split([], [], [], 2, pool_z=(0, 1, 5), val_z=(2,), test_z=(6, 7))
    assert bench.shifted_slices(split, slice(1, 7)) == {
        "pool": [2, 3],
        "val": [1, 1],
        "test": [1, 2],  # z 7 is past the segment's end
    }
