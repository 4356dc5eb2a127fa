import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tomoloop.active.oracle import Behaviour, answer
from tomoloop.active.policy import PromotionRules, StopRules, decide, stop_reason
from tomoloop.errors import TomoloopError

NAMES = ("pore", "nmc", "cbd")


def _evaluation(miou: float, cbd_fraction: float = 0.2) -> dict:
    return {
        "mIoU": miou,
        "mDSC": miou + 0.05,
        "per_class": {
            "pore": {"volume_fraction": 0.3, "volume_fraction_truth": 0.3},
            "nmc": {"volume_fraction": 0.7 - cbd_fraction, "volume_fraction_truth": 0.5},
            "cbd": {"volume_fraction": cbd_fraction, "volume_fraction_truth": 0.2},
        },
    }


def test_promotion_needs_a_gain_beyond_the_margin_and_a_true_microstructure():
    rules = PromotionRules(margin=0.01, fraction_tolerance=0.05)
    assert decide(_evaluation(0.80), _evaluation(0.75), rules).promote
    worse = decide(_evaluation(0.74), _evaluation(0.75), rules)
    assert not worse.promote and "does not beat the champion" in worse.reasons[-1]
    assert not decide(_evaluation(0.755), _evaluation(0.75), rules).promote  # inside margin
    shifted = decide(_evaluation(0.90, cbd_fraction=0.1), _evaluation(0.75), rules)
    assert not shifted.promote
    assert any(
        "cbd volume fraction 0.100 is -0.100 from the gold 0.200" in r for r in shifted.reasons
    )
    assert decide(_evaluation(0.3), None, rules).promote  # the first model becomes champion
    assert not decide(_evaluation(0.3, cbd_fraction=0.5), None, rules).promote
    with pytest.raises(TomoloopError, match="mIoU or mDSC"):
        PromotionRules(metric="accuracy")


def test_a_challenger_closer_to_the_gold_fractions_than_the_champion_is_not_kept_out():
    rules = PromotionRules(fraction_tolerance=0.05)
    champion = _evaluation(0.70, cbd_fraction=0.10)  # cbd −0.10, nmc +0.10 from the gold
    closer = decide(_evaluation(0.75, cbd_fraction=0.13), champion, rules)  # −0.07, +0.07
    assert closer.promote, closer.reasons
    tied = decide(_evaluation(0.75, cbd_fraction=0.10), champion, rules)
    assert tied.promote  # no further off than the champion
    further = decide(_evaluation(0.75, cbd_fraction=0.08), champion, rules)
    assert not further.promote
    assert any(
        "cbd volume fraction 0.080 is -0.120 from the gold 0.200 (tolerance 0.05; the "
        "champion's is -0.100)" in r
        for r in further.reasons
    )
    inside = _evaluation(0.70, cbd_fraction=0.19)  # a champion inside the tolerance
    assert not decide(_evaluation(0.75, cbd_fraction=0.13), inside, rules).promote


def _winding(predicted: float, lost: int = 0) -> dict:
    tortuosity = {"class": "pore", "axis": "x", "predicted": predicted, "truth": 2.0}
    return {**_evaluation(0.8), "tortuosity": {**tortuosity, "slices": 4, "lost": lost}}


def test_promotion_needs_the_pore_tortuosity_within_tolerance_and_connected():
    rules = PromotionRules(tortuosity_tolerance=0.2)
    assert decide(_winding(2.3), None, rules).promote  # +15 %
    straighter = decide(_winding(1.5), None, rules)
    assert not straighter.promote
    assert any("pore tortuosity 1.500 is -25% from the gold 2.000" in r for r in straighter.reasons)
    cut = decide(_winding(2.0, lost=1), None, rules)
    assert not cut.promote and any("stops connecting" in r for r in cut.reasons)
    assert decide(_evaluation(0.8), None, PromotionRules(tortuosity_tolerance=0.0)).promote


def test_evaluation_compares_in_plane_tortuosity_with_the_truth():
    from tomoloop.training.data import LabelledSlice
    from tomoloop.training.evaluation import evaluate

    labels = np.zeros((32, 32), np.uint8)
    labels[8:24, 4:28] = 1  # a particle the pore must go around
    truth = LabelledSlice(np.zeros((32, 32), np.float32), labels)

    class Constant(torch.nn.Module):  # predicts the truth: both tortuosities equal
        def forward(self, x):
            one_hot = torch.from_numpy(np.stack([labels == 0, labels == 1])).float()
            return (one_hot * 10)[None].expand(x.shape[0], -1, -1, -1)[
                ..., : x.shape[2], : x.shape[3]
            ]

    result = evaluate(Constant(), [truth], 2, tile=32, overlap=0, tortuosity_class=0)
    t = result.as_dict(("pore", "solid"))["tortuosity"]
    assert t["slices"] == 1 and t["lost"] == 0 and t["predicted"] == pytest.approx(t["truth"])
    assert t["truth"] > 1.05  # the detour around the particle


def test_stop_rules_budget_and_patience():
    assert stop_reason([0.5], 10, StopRules(label_budget=10)).startswith("label budget spent")
    assert stop_reason([0.5], 9, StopRules(label_budget=10)) is None
    rules = StopRules(patience=2, min_gain=0.01)
    assert stop_reason([0.5, 0.6], 0, rules) is None  # not enough rounds to judge
    assert stop_reason([0.5, 0.6, 0.605], 0, rules) is None  # 0.6 > 0.5 + 0.01 within window
    assert "no gain of 0.01 over the last 2 rounds" in stop_reason([0.6, 0.605, 0.59], 0, rules)
    assert stop_reason([0.6, 0.605, 0.62], 0, rules) is None


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), shape=st.tuples(st.integers(4, 24), st.integers(4, 24)))
def test_an_unbiased_noiseless_oracle_answers_the_truth_exactly(seed, shape):
    truth = np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.uint8)
    np.testing.assert_array_equal(answer(truth, NAMES), truth)


def test_bias_grows_or_shrinks_one_phase_and_noise_stays_on_boundaries():
    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 2  # a cbd square in pore
    truth[8:12, 8:12] = 1  # an nmc core inside it
    grown = answer(truth, NAMES, Behaviour(bias={"cbd": 2}))
    assert (grown == 2).sum() > (truth == 2).sum() and (grown == 1).sum() < (truth == 1).sum()
    shrunk = answer(truth, NAMES, Behaviour(bias={"cbd": -1}))
    assert (shrunk == 2).sum() < (truth == 2).sum()
    ring = (truth == 2) & (shrunk != 2)
    assert ring.any() and set(np.unique(shrunk[ring])) <= {0, 1}  # lost cbd went to a neighbour
    assert (shrunk[ring & (np.indices(truth.shape)[0] < 6)] == 0).all()  # outer ring → pore
    noisy = answer(truth, NAMES, Behaviour(noise=1.0), np.random.default_rng(0))
    changed = noisy != truth
    assert changed.any()
    interior = np.zeros_like(changed)
    interior[1:-1, 1:-1] = (
        (truth[1:-1, 1:-1] == truth[:-2, 1:-1])
        & (truth[1:-1, 1:-1] == truth[2:, 1:-1])
        & (truth[1:-1, 1:-1] == truth[1:-1, :-2])
        & (truth[1:-1, 1:-1] == truth[1:-1, 2:])
    )
    assert not (changed & interior).any()
    busy = Behaviour().lead_time(truth)
    assert busy > Behaviour().lead_time(np.zeros_like(truth)) == 20.0
    with pytest.raises(TomoloopError, match="phase 'dust'"):
        answer(truth, NAMES, Behaviour(bias={"dust": 1}))
    with pytest.raises(TomoloopError, match="probability"):
        Behaviour(noise=2)
