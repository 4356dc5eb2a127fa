"""Benchmark: `tomoloop coco from-stack` as a whole process against the paper-method script.

What a user waits for: a fresh process each (interpreter start, imports, reading the TIFF,
labelling, encoding, JSON written). Input: a SIDE³ binary stack (porespy ``blobs``,
porosity 0.5, blobiness 3, seed 0; ≈ 20,000 2D instances at 256³) written here.
**Baseline** in the same run: the paper's method (Daemi et al. 2022, §2.1) as
``bench/coco_convert.py`` writes it (skimage label → regionprops → find_contours → shapely
simplify → JSON), run as a script. tomoloop: ``tomoloop coco from-stack --no-masks`` (the
script writes no masks). Each is run REPEATS times, alternating; the fastest counts. Also
reported: tomoloop's own conversion rate (``seconds`` in its JSON summary: reading,
labelling, RLE, JSON written) and peak RSS (VmHWM) of each process.

Run: ``.venv/bin/python bench/coco_process.py [--side 256] [--repeats 3]``
(``--memory-side 500`` adds tomoloop at 500³ with ``--particle-ids``, peak RSS only).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import porespy
import tifffile
from measure import peak_rss_mib

OUT = Path(__file__).resolve().parent / "out" / "coco_process"
_CLI = "from tomoloop.cli import main; sys.argv = ['tomoloop', *sys.argv[1:]]; main()"
_REFERENCE = (
    "from pathlib import Path; from coco_convert import reference_convert; "
    "reference_convert(Path(sys.argv[1]), 1, Path(sys.argv[2]))"
)


def blob_stack(side: int) -> Path:
    """A side³ uint8 binary stack (1 = solid) on disk, made once."""
    path = OUT / f"blobs-{side}.tif"
    if not path.exists():
        solid = porespy.generators.blobs(shape=[side] * 3, porosity=0.5, blobiness=3, seed=0)
        tifffile.imwrite(path, solid.astype(np.uint8))
    return path


def timed(call: str, *args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of ``call`` in a fresh process."""
    started = time.perf_counter()
    rss, stdout = peak_rss_mib(call, *args)
    return time.perf_counter() - started, rss, stdout


def from_stack(stack: Path, out: Path, *extra: str) -> tuple[float, float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    seconds, rss, stdout = timed(
        _CLI, "coco", "from-stack", "--labels", str(stack), "--phases", "background=0,solid=1",
        "--out", str(out), "--no-masks", "--json", *extra,
    )  # fmt: skip
    return seconds, rss, json.loads(stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-side", type=int, default=0, help="also 500³ peak RSS")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    stack = blob_stack(args.side)
    voxels = args.side**3
    reference, ours, convert = [], [], []
    for _ in range(args.repeats):
        seconds, ref_rss, _ = timed(_REFERENCE, str(stack), str(OUT / "reference.json"))
        reference.append(seconds)
        seconds, our_rss, summary = from_stack(stack, OUT / "tomoloop")
        ours.append(seconds)
        convert.append(summary["seconds"])
        print(f"reference {reference[-1]:6.2f} s   tomoloop {ours[-1]:5.2f} s "
              f"(conversion {convert[-1]:.2f} s)", flush=True)  # fmt: skip
    result = {
        "side": args.side,
        "instances": sum(summary["instances"].values()),
        "reference_s": min(reference),
        "tomoloop_s": min(ours),
        "speedup": min(reference) / min(ours),
        "conversion_s": min(convert),
        "conversion_mvox_per_s": voxels / min(convert) / 1e6,
        "reference_peak_rss_mib": ref_rss,
        "tomoloop_peak_rss_mib": our_rss,
    }
    print(
        f"{args.side}³, {result['instances']} instances: reference {result['reference_s']:.2f} s, "
        f"tomoloop {result['tomoloop_s']:.2f} s as a process → {result['speedup']:.1f}x "
        f"(target ≥ 25x); conversion {result['conversion_mvox_per_s']:.1f} Mvox/s "
        f"(target ≥ 50); peak RSS {our_rss:.0f} vs {ref_rss:.0f} MiB"
    )
    if args.memory_side:
        big = blob_stack(args.memory_side)
        seconds, rss, summary = from_stack(big, OUT / "tomoloop-big", "--particle-ids")
        result["memory"] = {"side": args.memory_side, "peak_rss_mib": rss, "seconds": seconds}
        print(f"{args.memory_side}³ --particle-ids: peak RSS {rss:.0f} MiB (target < 1024), "
              f"{seconds:.1f} s, {sum(summary['instances'].values())} instances")  # fmt: skip
    (OUT / "coco_process.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
