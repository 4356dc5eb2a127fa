"""``tomoloop train`` and ``tomoloop evaluate``: train a network on a dataset version and
register it; score a registered model on a split."""

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from tomoloop.cli.lookup import find_dataset, open_registry
from tomoloop.cli.options import DeviceOpt, JsonFlag, parse_options
from tomoloop.cli.output import summary_table
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError


def train(
    dataset: Annotated[str, typer.Option(help="NAME or NAME@VERSION (default latest).")],
    arch: Annotated[
        str, typer.Option(help="Architecture, e.g. unet, ynet, matphase, maskrcnn.")
    ] = "unet",
    epochs: Annotated[int, typer.Option(help="Most epochs to train.")] = 30,
    patch: Annotated[int, typer.Option(help="Patch side in pixels (multiple of 16).")] = 128,
    batch: Annotated[
        int | None, typer.Option(help="Patches (semantic, 8) or images (maskrcnn, 2) per step.")
    ] = None,
    patches_per_epoch: Annotated[int, typer.Option(help="Random patches per epoch.")] = 256,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Learning rate (semantic AdamW 1e-3; maskrcnn SGD 1e-4, Daemi et al. 2022)."
        ),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(help="ce (default), bce, balanced_ce, dice, tversky, focal_tversky."),
    ] = None,
    class_weights: Annotated[
        str | None,
        typer.Option(help="ce/bce class weights: balanced (inverse frequency) or 1,2,0.5."),
    ] = None,
    tversky_beta: Annotated[
        float | None,
        typer.Option(help="tversky/focal_tversky: weight of the false positives (0.3)."),
    ] = None,
    recipe: Annotated[
        str,
        typer.Option(help="default, or seed: the paper's settings for --arch (docs/seeds.md)."),
    ] = "default",
    patience: Annotated[
        int | None, typer.Option(help="Epochs without val gain before stopping (8; 0 never).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    average: Annotated[
        float | None,
        typer.Option(
            help="Decay of a moving average of the weights (e.g. 0.99; 0 none): validation "
            "and the kept model use the average."
        ),
    ] = None,
    device: DeviceOpt = "auto",
    parent: Annotated[
        int | None,
        typer.Option(
            "--from",
            help="Fine-tune this registered model version (maskrcnn: a Mask R-CNN of the "
            "same --depth and --norm, e.g. trained on an earlier scan).",
        ),
    ] = None,
    freeze: Annotated[
        list[str] | None, typer.Option(help="Freeze parameters with this name prefix.")
    ] = None,
    tier_weights: Annotated[
        str, typer.Option(help="e.g. auto=1,annotator=2,expert=4 (defaults shown).")
    ] = "",
    option: Annotated[
        list[str] | None, typer.Option(help="Network option KEY=VALUE, e.g. base=8.")
    ] = None,
    no_augment: Annotated[
        bool, typer.Option("--no-augment", help="Switch augmentation off.")
    ] = False,
    row_removal: Annotated[
        int | None,
        typer.Option(help="Add K row-removed copies of each slice (Tabassum et al. n.d.: 10)."),
    ] = None,
    exclusive: Annotated[
        list[str] | None,
        typer.Option(
            help="Phases that cannot touch, A:B (Tabassum et al. n.d. kNN label smoothing)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: dataset).")] = None,
    iterations: Annotated[int, typer.Option(help="maskrcnn: optimiser steps.")] = 3000,
    heads_iterations: Annotated[
        int,
        typer.Option(
            help="maskrcnn: the first steps train the heads only (ResNet frozen), then all "
            "layers: fine-tuning --weights, e.g. a model trained on an earlier scan."
        ),
    ] = 0,
    depth: Annotated[int, typer.Option(help="maskrcnn: ResNet depth 18, 34, 50 or 101.")] = 101,
    norm: Annotated[
        str, typer.Option(help="maskrcnn: GN (from scratch) or FrozenBN (with --weights).")
    ] = "GN",
    weights: Annotated[
        Path | None, typer.Option(help="maskrcnn: local pretrained checkpoint (no download).")
    ] = None,
    min_size: Annotated[int, typer.Option(help="maskrcnn: shorter image side, pixels.")] = 512,
    instances: Annotated[
        list[str] | None,
        typer.Option(help="maskrcnn: phase whose particles are instances (default all but 1st)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a semantic network or a Mask R-CNN on a dataset version and register it as a
    candidate.

    Run the same command again after a crash and it resumes from its last epoch
    (checkpoint, for maskrcnn).
    """
    from tomoloop.config import Settings
    from tomoloop.flows.train import train_semantic
    from tomoloop.inference.predict import default_overlap
    from tomoloop.names import check_name
    from tomoloop.networks.registry import MODELS
    from tomoloop.outputs import Output, check_outputs
    from tomoloop.training.data import NO_AUGMENTATION
    from tomoloop.training.recipes import apply_recipe

    if name is not None:
        check_name(name, "--name")
    runs = Output("the run folder", Settings().home / "runs", folder=True)
    check_outputs({"--weights": weights}, [runs])
    given = {
        k: v
        for k, v in (
            ("lr", lr),
            ("batch", batch),
            ("loss", loss),
            ("class_weights", class_weights),
            ("tversky_beta", tversky_beta),
            ("patience", patience),
            ("row_removal", row_removal),
            ("average", average),
        )
        if v is not None
    }  # else the recipe's or the defaults
    if arch == "maskrcnn":
        if recipe != "default":
            raise TomoloopError("--recipe is for the semantic networks; maskrcnn takes none")
        maskrcnn = {
            "iterations": iterations,
            "heads_iterations": heads_iterations,
            "depth": depth,
            "norm": norm,
            "weights": str(weights or ""),
            "min_size": min_size,
            "max_size": 2 * min_size,
            "seed": seed,
            **{k: v for k, v in given.items() if k in ("lr", "batch")},
        }
        _train_maskrcnn(
            dataset, maskrcnn, tuple(instances or ()), name, device, parent, as_json
        )
        return
    if arch not in MODELS:
        raise TomoloopError(
            f"unknown architecture {arch!r}: choose one of {', '.join(MODELS)}, maskrcnn"
        )
    config, options = apply_recipe(
        recipe,
        arch,
        {
            "epochs": epochs,
            "patch": patch,
            "patches_per_epoch": patches_per_epoch,
            "seed": seed,
            "overlap": default_overlap(patch),
            "exclusive": [pair.split(":") for pair in exclusive or []],
            **given,
        },
        parse_options(option),
    )
    if no_augment:
        config["augmentation"] = asdict(NO_AUGMENTATION)
    _check_train_options(config, device, tier_weights)
    run(
        lambda: train_semantic(
            find_dataset(open_registry(), dataset).id,
            arch,
            name=name,
            config=config,
            options=options,
            device=device,
            parent=parent,
            freeze_prefixes=tuple(freeze or ()),
            tier_weights=tier_weights,
        ),
        as_json,
        _show_model,
        children=True,
    )


def _check_train_options(config: dict, device: str, tier_weights: str) -> None:
    """Refuse bad semantic training options before the flow starts (it checks them again
    before it registers anything)."""
    from tomoloop.training.data import parse_tier_weights
    from tomoloop.training.trainer import TrainConfig, resolve_device

    TrainConfig(**{k: v for k, v in config.items() if k not in ("exclusive", "augmentation")})
    resolve_device(device)
    parse_tier_weights(tier_weights)


def _train_maskrcnn(
    dataset: str,
    config: dict,
    instances: tuple[str, ...],
    name: str | None,
    device: str,
    parent: int | None,
    as_json: bool,
) -> None:
    from tomoloop.flows.instances import train_maskrcnn

    run(
        lambda: train_maskrcnn(
            find_dataset(open_registry(), dataset).id, name, config, instances, device, parent
        ),
        as_json,
        _show_model,
        children=True,
    )


def _show_model(result: dict) -> None:
    summary_table(f"model version {result['model_version']}", result)


def evaluate(
    model: Annotated[int, typer.Option(help="Registered model version id.")],
    dataset: Annotated[str, typer.Option(help="NAME or NAME@VERSION (default latest).")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Score a model on a dataset split (mIoU, mDSC, fIU, per class); recorded as metrics."""
    from tomoloop.flows.train import evaluate_model

    if split not in ("train", "val", "test"):
        raise TomoloopError(f"--split {split!r}: use train, val or test")
    run(
        lambda: evaluate_model(model, find_dataset(open_registry(), dataset).id, split, device),
        as_json,
        lambda result: summary_table(f"model {model} on {result['dataset']} {split}", result),
        children=True,
    )
