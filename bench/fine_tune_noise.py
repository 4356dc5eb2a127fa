"""Benchmark diagnostic: how much of the domain-shift benchmark's curves is the fine-tuning's
own noise (issue 18).

One arm of ``bench/al_efficiency.py``'s benchmark, round by round, with what each round's
fine-tuning did (``tomoloop.active.domain_shift.FineTune``): the target val mIoU of the
weights it started from and of every epoch (the round ends with its best epoch, even one
below the start). Prints per round and per seed, then the run's figures:

* rounds above the start — of all rounds, how many had an epoch at least as good on val as
  the weights they started from (until 2026-12-05 the only rounds that changed the model);
* epoch-to-epoch val swing — the mean |val mIoU(epoch) − val mIoU(epoch − 1)| inside a
  fine-tuning: what a single val reading is worth;
* val gain against test gain — over every round, the correlation between what a round
  gained on the target's val split (best epoch − start) and what it gained on the test split:
  how well the yardstick that selects a round's epoch predicts the figure the benchmark
  reports.

Run: ``.venv/bin/python bench/fine_tune_noise.py --scenario weave [--arm random/region]
[--seeds 3] [--rounds 6] [--budget-px 8192] [--lr 5e-4] [--average 0.99]`` (about 7 min for
weave on one core); writes ``bench/out/fine_tune_noise_<scenario>….json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from al_efficiency import DATA, OUT, SCENARIOS, write_scenario

from tomoloop.active.domain_shift import FineTune, arm_curve, initial_model
from tomoloop.active.shift_setup import ShiftSetup, parse_arms, quick, read_shift_data


def swing(values: Sequence[float]) -> list[float]:
    """|differences| between consecutive epochs' val mIoU."""
    return np.abs(np.diff(values)).tolist() if len(values) > 1 else []


def summary(rounds: list[dict]) -> dict:
    """The run's figures from its rounds (``beat_start``, ``start_val``, ``epoch_val``,
    ``test_before``, ``test``)."""
    swings = [d for r in rounds for d in swing(r["epoch_val"])]
    val_gain = [max(r["epoch_val"]) - r["start_val"] for r in rounds]
    test_gain = [r["test"] - r["test_before"] for r in rounds]
    enough = len(rounds) > 2 and np.std(val_gain) > 0 and np.std(test_gain) > 0
    return {
        "rounds": len(rounds),
        "beat_start": sum(r["beat_start"] for r in rounds),
        "epoch_swing": float(np.mean(swings)) if swings else None,
        "val_test_correlation": float(np.corrcoef(val_gain, test_gain)[0, 1]) if enough else None,
        "final_test": [r["test"] for r in rounds if r["last"]],
    }


def recorder(
    seed: int, initial_test: float, last: int, rounds: list[dict]
) -> Callable[[int, FineTune, float], None]:
    """An ``on_round`` for :func:`arm_curve` that appends seed ``seed``'s rounds to
    ``rounds`` and prints each (``initial_test``: the test mIoU before its first round)."""
    tests = [initial_test]

    def record(round_: int, tuned: FineTune, test: float) -> None:
        rounds.append(
            {
                "seed": seed,
                "round": round_,
                "beat_start": tuned.beat_start,
                "start_val": tuned.start_val,
                "epoch_val": list(tuned.epoch_val),
                "test_before": tests[-1],
                "test": test,
                "last": round_ == last - 1,
            }
        )
        tests.append(test)
        vals = " ".join(f"{v:.3f}" for v in tuned.epoch_val)
        print(
            f"seed {seed} round {round_}: {'above' if tuned.beat_start else 'below'} "
            f"val {tuned.start_val:.3f} → epochs [{vals}]  test {test:.4f}",
            flush=True,
        )

    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="weave")
    parser.add_argument("--arm", default="random/region")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--budget-px", type=int, default=8192)
    parser.add_argument("--lr", type=float, help="the fine-tunings' learning rate")
    parser.add_argument("--average", type=float, default=0.0, help="the fine-tunings' EMA decay")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared/data folder")
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arm = parse_arms(args.arm)[0]
    setup = ShiftSetup((arm,), args.seeds, args.rounds, args.budget_px)
    setup = quick(setup) if args.quick else setup
    tuning = replace(setup.fine_tune, average=args.average)
    setup = replace(setup, fine_tune=tuning if args.lr is None else replace(tuning, lr=args.lr))
    source, target = write_scenario(args.scenario, args.data)
    data = read_shift_data([source], target, SCENARIOS[args.scenario][1])
    started = time.perf_counter()
    rounds: list[dict] = []
    for seed in range(setup.seeds):
        start = initial_model(seed, data, setup)
        arm_curve(arm, seed, data, setup, start, recorder(seed, start.miou, setup.rounds, rounds))
    figures = summary(rounds)
    lr, average = setup.fine_tune.lr, setup.fine_tune.average
    correlation = figures["val_test_correlation"]
    print(
        f"\n{args.scenario} {arm.name}, lr {lr:g}, average {average:g}: "
        f"{figures['beat_start']} of {figures['rounds']} rounds above their start on val; "
        f"epoch-to-epoch val swing {figures['epoch_swing']:.3f}; val gain vs test gain r = "
        + ("n/a" if correlation is None else f"{correlation:.2f}")
        + "; final test "
        + ", ".join(f"{t:.3f}" for t in figures["final_test"])
    )
    tag = f"_lr{lr:g}_avg{average:g}" + ("_quick" if args.quick else "")
    out = OUT / f"fine_tune_noise_{args.scenario}{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "scenario": args.scenario,
        "arm": arm.name,
        "lr": lr,
        "average": average,
        "seconds": time.perf_counter() - started,
        **figures,
        "per_round": rounds,
    }
    out.write_text(json.dumps(document, indent=2))
    print(f"saved {out} ({document['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
