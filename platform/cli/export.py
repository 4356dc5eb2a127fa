"""``tomoloop export``: a dataset's best labels as label volumes (OME-Zarr or TIFF) or as
an nnU-Net v2 raw dataset, and a registered network as TorchScript and ONNX."""

from pathlib import Path
from typing import Annotated

import typer

from tomoloop.cli.lookup import find_dataset
from tomoloop.cli.options import JsonFlag
from tomoloop.cli.output import out
from tomoloop.cli.runner import run
from tomoloop.errors import TomoloopError

export_app = typer.Typer(
    help="Labels, datasets and networks in the formats other tools read.", no_args_is_help=True
)

DatasetOpt = Annotated[str, typer.Option(help="NAME or NAME@VERSION (default latest).")]
VOLUME_FORMATS = ("ome-zarr", "tiff")
MODEL_FORMATS = ("torchscript", "onnx")
# modules the ONNX export needs: the formats extra
_ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")


def check_volume_format(fmt: str) -> None:
    """Refuse a --format other than ome-zarr or tiff."""
    if fmt not in VOLUME_FORMATS:
        raise TomoloopError(f"--format {fmt!r}: use {' or '.join(VOLUME_FORMATS)}")


@export_app.command("labels")
def export_labels_command(
    dataset: DatasetOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (must be new).")],
    fmt: Annotated[str, typer.Option("--format", help="ome-zarr or tiff.")] = "ome-zarr",
    as_json: JsonFlag = False,
) -> None:
    """One label volume per volume of a dataset version: each labelled slice's best
    label, every other voxel 'unlabelled' (255, or 65535 for uint16 phases)."""
    from tomoloop.outputs import Output, check_new, check_outputs
    from tomoloop.services import Services, export_labels

    check_volume_format(fmt)
    check_new(out_dir)
    check_outputs({}, [Output("--out", out_dir, folder=True)])

    def work() -> dict:
        with Services.from_settings(create=False) as services:
            found = find_dataset(services.registry, dataset)
            return export_labels(services, found, out_dir, fmt)  # type: ignore[arg-type]

    run(work, as_json, _show_labels)


def _show_labels(result: dict) -> None:
    files = ", ".join(f"{v['file']} ({v['slices']} slices)" for v in result["volumes"])
    out.print(
        f"[green]✓[/] {result['dataset']}@{result['version']} → {result['out_dir']}: {files}; "
        f"unlabelled voxels are {result['unlabelled']}"
    )


@export_app.command("nnunet")
def export_nnunet_command(
    dataset: DatasetOpt,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="New folder named DatasetNNN_Name, e.g. in $nnUNet_raw."),
    ],
    as_json: JsonFlag = False,
) -> None:
    """A dataset version as an nnU-Net v2 raw dataset: one 2D case per labelled slice,
    splits_final.json from the dataset's train/val split, test slices in imagesTs."""
    from tomoloop.outputs import Output, check_new, check_outputs
    from tomoloop.services import Services, export_nnunet
    from tomoloop.training.nnunet import check_folder_name

    check_folder_name(out_dir.name)
    check_new(out_dir)
    check_outputs({}, [Output("--out", out_dir, folder=True)])

    def work() -> dict:
        with Services.from_settings(create=False) as services:
            return export_nnunet(services, find_dataset(services.registry, dataset), out_dir)

    run(
        work,
        as_json,
        lambda r: out.print(
            f"[green]✓[/] {r['dataset']}@{r['version']} → {r['out_dir']} "
            f"({', '.join(f'{n} {s}' for s, n in r['cases'].items())} slices)"
            + ("" if r["splits_final"] else "; no val slices: nnU-Net makes its own folds")
        ),
    )


@export_app.command("model")
def export_model_command(
    model: Annotated[int, typer.Option(help="Registered model version id.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (must be new).")],
    fmt: Annotated[
        list[str] | None,
        typer.Option("--format", help="torchscript or onnx; repeat for both (default both)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """A registered semantic network as TorchScript (model.pt) and ONNX (model.onnx), each
    checked equal to PyTorch on the same input; model.json says the input and classes."""
    import importlib.util

    from tomoloop.outputs import Output, check_new, check_outputs
    from tomoloop.services import Services, export_model

    formats = tuple(dict.fromkeys(fmt or MODEL_FORMATS))
    for name in formats:
        if name not in MODEL_FORMATS:
            raise TomoloopError(f"--format {name!r}: use {' or '.join(MODEL_FORMATS)}")
    missing = [m for m in _ONNX_MODULES if importlib.util.find_spec(m) is None]
    if "onnx" in formats and missing:
        raise TomoloopError(
            f"ONNX export needs {', '.join(missing)}: pip install 'tomoloop[formats]' "
            "(or export --format torchscript)"
        )
    check_new(out_dir)
    check_outputs({}, [Output("--out", out_dir, folder=True)])

    def work() -> dict:
        with Services.from_settings(create=False) as services:
            return export_model(services, model, out_dir, formats)

    run(
        work,
        as_json,
        lambda r: out.print(
            f"[green]✓[/] model {r['model_version']} → {r['out_dir']}: "
            + ", ".join(
                f"{r['files'][f]} (max difference {r['max_difference'][f]:.1e})" for f in r["files"]
            )
        ),
    )
