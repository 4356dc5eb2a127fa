"""Benchmark: label stack → COCO, tomoloop vs the paper's method, and peak memory at 500³.

Reference ("paper method", Daemi et al. 2022, §2.1, as a careful user would write it;
docs/references.md): read the stack once, per slice skimage ``label`` → ``regionprops`` →
``find_contours`` on each cropped instance → shapely ``simplify`` → one polygon list per instance →
JSON. tomoloop: ``convert_stack`` (OpenCV components, vectorised RLE, JSON) reading the TIFF lazily.
Both run in this process on the same inputs; both write their JSON. Exactness is checked by decoding
every annotation and comparing with the label slice.

Run: ``make bench`` or ``.venv/bin/python bench/coco_convert.py [--skip-memory]``.
Inputs: ``../shared/data`` (NMC phase of matbox_nmc_cbd_labels.tif; matbox_ellipsoids_labels.tif).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import tifffile
from measure import best_of, peak_rss_mib
from pycocotools import mask as mask_utils
from shapely.geometry import Polygon
from skimage.measure import find_contours, label, regionprops

from tomoloop.coco.convert import CocoOptions, convert_stack
from tomoloop.labels.phases import PhaseMap
from tomoloop.stacks.opener import open_stack

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
REPEATS = 3  # both methods: fastest of three runs
CASES = [
    ("matbox_nmc_cbd_labels.tif", "pore=0,nmc=1,cbd=2", 1),
    ("matbox_ellipsoids_labels.tif", "background=0,solid=1", 1),
]


def reference_convert(labels_path: Path, value: int, out_json: Path, tolerance: float = 0.5):
    """The paper's method: skimage label + find_contours + shapely simplify, polygons."""
    volume = tifffile.imread(labels_path)
    images, annotations = [], []
    for z, image in enumerate(volume):
        h, w = image.shape
        images.append({"id": z + 1, "file_name": f"{z:05d}.png", "height": h, "width": w})
        for region in regionprops(label(image == value, connectivity=2)):
            r0, c0, r1, c1 = region.bbox
            crop = np.pad(region.image, 1)
            segmentation = []
            for contour in find_contours(crop.astype(np.uint8), 0.5):
                points = contour[:, ::-1] + (c0 - 1, r0 - 1)  # (row, col) → (x, y)
                if len(points) < 3:
                    continue
                poly = Polygon(points).simplify(tolerance, preserve_topology=True)
                if poly.is_empty or poly.area == 0:
                    continue
                segmentation.append(np.asarray(poly.exterior.coords).ravel().tolist())
            if not segmentation:
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": z + 1,
                    "category_id": 1,
                    "segmentation": segmentation,
                    "area": float(region.area),
                    "bbox": [c0, r0, c1 - c0, r1 - r0],
                    "iscrowd": 0,
                }
            )
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "phase"}]}
    out_json.write_text(json.dumps(doc))
    return len(images), len(annotations)


def pixel_errors(coco_json: Path, labels_path: Path, value: int) -> tuple[int, int]:
    """(pixels where the decoded annotations differ from the phase, phase pixels)."""
    doc = json.loads(coco_json.read_text())
    volume = tifffile.imread(labels_path)
    by_image: dict[int, list] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["segmentation"])
    wrong = 0
    for image in doc["images"]:
        h, w = image["height"], image["width"]
        truth = volume[image.get("index", image["id"] - 1)] == value
        decoded = np.zeros((h, w), dtype=bool)
        for seg in by_image.get(image["id"], []):
            rle = (
                mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                if isinstance(seg, list)
                else seg
            )
            decoded |= mask_utils.decode(rle).astype(bool)
        wrong += int((decoded != truth).sum())
    return wrong, int((volume == value).sum())


def tomoloop_convert(path: Path, phases: PhaseMap, value: int):
    with open_stack(path) as stack:
        return convert_stack(
            stack,
            OUT / f"tomoloop-{path.stem}",
            phases,
            CocoOptions(instance_phases=(value,), semantic_masks=False),
            overwrite=True,
        )


def bench_speed() -> list[dict]:
    rows = []
    for name, phases_text, value in CASES:
        path = DATA / name
        phases = PhaseMap.parse(phases_text)
        reference_json = OUT / f"reference-{path.stem}.json"
        t_ref, (n_img, n_ref) = best_of(
            REPEATS, partial(reference_convert, path, value, reference_json)
        )
        t_ours, summary = best_of(REPEATS, partial(tomoloop_convert, path, phases, value))
        ours_json = Path(summary.annotation_files["annotations"])
        wrong_ours, fg = pixel_errors(ours_json, path, value)
        wrong_ref, _ = pixel_errors(OUT / f"reference-{path.stem}.json", path, value)
        n_ours = sum(summary.instances.values())
        rows.append(
            {
                "volume": name,
                "slices": n_img,
                "reference_s": t_ref,
                "tomoloop_s": t_ours,
                "speedup": t_ref / t_ours,
                "reference_slices_per_s": n_img / t_ref,
                "tomoloop_slices_per_s": n_img / t_ours,
                "reference_instances_per_s": n_ref / t_ref,
                "tomoloop_instances_per_s": n_ours / t_ours,
                "reference_instances": n_ref,
                "tomoloop_instances": n_ours,
                "reference_wrong_pixels_pct": 100 * wrong_ref / fg,
                "tomoloop_wrong_pixels": wrong_ours,
            }
        )
    return rows


def tiled_volume(side: int = 500) -> Path:
    """A side³ uint8 stack on disk, tiled from the shared ellipsoid packing."""
    path = OUT / f"ellipsoids-{side}.tif"
    if not path.exists():
        base = tifffile.imread(DATA / "matbox_ellipsoids_labels.tif")
        reps = [-(-side // s) for s in base.shape]
        volume = np.tile(base, reps)[:side, :side, :side]
        tifffile.imwrite(path, volume)
    return path


def bench_memory() -> list[dict]:
    path = tiled_volume()
    rows = []
    t0 = time.perf_counter()
    rss, _ = peak_rss_mib(
        "from coco_convert import reference_convert; "
        "reference_convert(__import__('pathlib').Path(sys.argv[1]), 1, "
        "__import__('pathlib').Path(sys.argv[2]))",
        str(path),
        str(OUT / "reference-mem500.json"),
    )
    rows.append(
        {
            "case": "500³ uint8 reference (paper method)",
            "peak_rss_mib": rss,
            "seconds": time.perf_counter() - t0,
            "instances": None,
        }
    )
    for extra in ([], ["--particle-ids"], ["--split", "0.8,0.1,0.1"]):
        rss, stdout = peak_rss_mib(
            "from tomoloop.cli import app; app(args=sys.argv[1:], standalone_mode=False)",
            "coco",
            "from-stack",
            "--labels",
            str(path),
            "--phases",
            "background=0,solid=1",
            "--out",
            str(OUT / "mem500"),
            "--overwrite",
            "--no-masks",
            "--json",
            *extra,
        )
        summary = json.loads(stdout)
        rows.append(
            {
                "case": "500³ uint8 tomoloop " + (" ".join(extra) or "(streaming)"),
                "peak_rss_mib": rss,
                "seconds": summary["seconds"],
                "instances": sum(summary["instances"].values()),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"speed": bench_speed()}
    print(
        f"{'volume':32s} {'slices':>6s} {'ref s':>8s} {'ours s':>8s} {'ratio':>7s} "
        f"{'ref inst/s':>10s} {'our inst/s':>10s} {'ref wrong px':>12s} {'our wrong px':>12s}"
    )
    for r in results["speed"]:
        print(
            f"{r['volume']:32s} {r['slices']:6d} {r['reference_s']:8.2f} {r['tomoloop_s']:8.2f} "
            f"{r['speedup']:6.1f}x {r['reference_instances_per_s']:10.0f} "
            f"{r['tomoloop_instances_per_s']:10.0f} {r['reference_wrong_pixels_pct']:11.2f}% "
            f"{r['tomoloop_wrong_pixels']:12d}"
        )
    if not args.skip_memory:
        results["memory"] = bench_memory()
        baseline = results["memory"][0]["peak_rss_mib"]
        for r in results["memory"]:
            print(
                f"{r['case']:48s} peak RSS {r['peak_rss_mib']:6.0f} MiB "
                f"({r['peak_rss_mib'] / baseline:4.2f}x the reference) {r['seconds']:6.1f} s"
            )
    (OUT / "coco_convert.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
