"""``tomoloop ingest`` and ``tomoloop gold``: stacks and gold labels into the registry."""

from functools import partial
from typing import Annotated

import typer

from tomoloop.cli.lookup import find_dataset, open_registry
from tomoloop.cli.options import (
    STACK_FORMATS,
    DatasetOpt,
    JsonFlag,
    VoxelOpt,
    parse_voxel_size,
)
from tomoloop.cli.output import print_result
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError


def ingest(
    gray: Annotated[str, typer.Argument(help=f"Grayscale stack: {STACK_FORMATS}.")],
    name: Annotated[
        str, typer.Option("--name", help="Volume name (and dataset name without --add-to).")
    ],
    phases: Annotated[str, typer.Option("--phases", help="Phase map, e.g. pore=0,nmc=1,cbd=2.")],
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="Label stack of the same shape; leave it out with --add-to for a scan "
            "nobody labelled yet (its slices join the splits unlabelled).",
        ),
    ] = None,
    phase: Annotated[
        list[str] | None, typer.Option(help="Instance phase(s) for COCO; default all but 0.")
    ] = None,
    split: Annotated[str, typer.Option(help="train,val,test fractions.")] = "0.8,0.1,0.1",
    material: Annotated[str, typer.Option(help="Material description.")] = "",
    voxel_size: VoxelOpt = None,
    add_to: Annotated[
        str | None,
        typer.Option(
            "--add-to",
            help="Add the volume to this existing dataset: its next version holds the "
            "previous one's slices and this volume's, split by --split on their own.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register stacks in the registry: volume, slices, auto labels, COCO, dataset v1 (or,
    with --add-to, the dataset's next version with this volume added, labelled or not)."""
    from tomoloop.labels.phases import PhaseMap
    from tomoloop.labels.splits import check_split_fills, parse_fractions
    from tomoloop.names import check_name
    from tomoloop.stacks.checks import check_same_shape
    from tomoloop.stacks.opener import open_stack

    check_name(name, "--name")
    if add_to is not None:
        check_name(add_to, "--add-to")
        find_dataset(open_registry(), add_to)  # one that does not exist: said first
    elif labels is None:
        raise TomoloopError(
            "--labels LABELS is missing: a volume without labels can only join an existing "
            "dataset (--add-to DATASET)"
        )
    PhaseMap.parse(phases)
    fractions = parse_fractions(split)
    size = parse_voxel_size(voxel_size)
    with open_stack(gray) as stack:  # unreadable or mismatched files: before the flow
        if labels is not None:
            with open_stack(labels) as label_stack:
                check_same_shape(stack, label_stack)
        check_split_fills(stack.shape[0], fractions)
    from tomoloop.flows.ingest import ingest as ingest_flow  # Prefect: after the checks

    run(
        lambda: ingest_flow(
            gray=gray,
            labels=labels,
            name=name,
            phases=phases,
            voxel_size=size,
            split=fractions,
            instance_phases=tuple(phase or ()),
            material=material,
            add_to=add_to,
        ),
        as_json,
        partial(print_result, f"ingested {name}"),
        children=True,
    )


def gold(
    labels: Annotated[
        str, typer.Argument(help=f"Gold label stack of the volume: {STACK_FORMATS}.")
    ],
    dataset: DatasetOpt,
    volume: Annotated[str, typer.Option(help="Registered volume name.")],
    splits: Annotated[str, typer.Option(help="Splits to label, comma-separated.")] = "val,test",
    as_json: JsonFlag = False,
) -> None:
    """Register gold (expert-tier) labels for the val/test slices models are judged on."""
    from tomoloop.flows.ingest import add_gold

    chosen = tuple(s.strip() for s in splits.split(",") if s.strip())
    if not chosen or not set(chosen) <= {"train", "val", "test"}:
        raise TomoloopError(f"--splits {splits!r}: a comma-separated subset of train,val,test")
    run(
        lambda: add_gold(dataset, volume, labels, chosen),
        as_json,
        partial(print_result, f"gold labels for {dataset}"),
        children=True,
    )
