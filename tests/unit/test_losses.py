import pytest
import torch

from tomoloop.errors import TomoloopError
from tomoloop.networks.losses import LOSSES, dice, focal_tversky, get_loss, tversky

torch.manual_seed(0)
TARGET = torch.randint(0, 3, (2, 16, 16))


def _logits(target, confidence):
    return torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * confidence


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_confident_right_answers_cost_less_than_wrong_ones(name):
    loss = get_loss(name)
    right = loss(_logits(TARGET, 12.0), TARGET)
    wrong = loss(_logits((TARGET + 1) % 3, 12.0), TARGET)
    assert right < 0.05 < wrong


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_flow_and_pixel_weights_count(name):
    loss = get_loss(name)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    value = loss(logits, TARGET, weight=torch.rand(2, 16, 16))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    unweighted = loss(logits, TARGET)
    weighted = loss(logits, TARGET, weight=(TARGET == 0).float() + 1e-3)
    assert not torch.isclose(unweighted, weighted)


def test_dice_is_tversky_at_one_half_and_focal_focuses_on_hard_cases():
    logits = torch.randn(2, 3, 16, 16)
    assert torch.isclose(dice(logits, TARGET), tversky(logits, TARGET, beta=0.5))
    good = _logits(TARGET, 2.0)
    # for a nearly right answer (small 1 − TI) the focal loss (power 3/4 < 1) is larger
    assert focal_tversky(good, TARGET) > tversky(good, TARGET)


def test_unknown_loss_names_the_choices():
    with pytest.raises(TomoloopError, match="focal_tversky"):
        get_loss("hinge")


def test_tversky_beta_weighs_the_false_positives():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :2, :4] = 1  # a thin class 1 of 8 pixels
    over = target.clone()
    over[0, 2, :4] = 1  # class 1 called on 4 pixels too many
    under = target.clone()
    under[0, 1, :4] = 0  # 4 of its pixels missed
    over_logits, under_logits = _logits(over, 30.0)[:, :2], _logits(under, 30.0)[:, :2]
    assert tversky(over_logits, target, beta=0.7) > tversky(under_logits, target, beta=0.7)
    assert tversky(over_logits, target, beta=0.3) < tversky(under_logits, target, beta=0.3)


@pytest.mark.parametrize("name", ["tversky", "focal_tversky"])
def test_the_training_configuration_binds_the_tversky_beta(name):
    from tomoloop.training.trainer import TrainConfig, TrainingError, training_loss

    logits = torch.randn(2, 3, 16, 16)
    bound = training_loss(TrainConfig(loss=name, tversky_beta=0.3), None, torch.device("cpu"))
    assert torch.equal(bound(logits, TARGET), get_loss(name)(logits, TARGET, beta=0.3))
    with pytest.raises(TrainingError, match=r"tversky_beta 1\.0 must lie between 0 and 1"):
        TrainConfig(loss=name, tversky_beta=1.0)
