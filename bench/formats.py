"""Benchmark: one real volume in every input format, read through the one lazy Stack.

The MATBOX NMC/CBD label stack (251 × 301 × 301 uint8, ``../shared/data``) is written as a
TIFF, HDF5 (one chunk per slice; gzip in 32³ chunks), Zarr v3 (zstd in 32³ chunks),
OME-Zarr 0.5 (one chunk per slice), a folder of TIFF slices, a folder of PNG slices and a
raw file. For each: open, one z slice, one y slice, every z slice (``iter_slices``), and
the memory Python allocated while reading one z slice, all checked equal to the TIFF's
voxels. Fastest of ``--repeat`` runs, wall and CPU seconds (CPU is what a loaded machine
does not inflate).

Run: ``.venv/bin/python bench/formats.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import tifffile
import zarr
from PIL import Image

from tomoloop.stacks.opener import open_stack

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "matbox_nmc_cbd_labels.tif"


def _write_all(volume: np.ndarray, folder: Path) -> dict[str, str]:
    """Write ``volume`` in every format; format name → stack source."""
    nz, ny, nx = volume.shape
    tifffile.imwrite(folder / "v.tif", volume)
    with h5py.File(folder / "v.h5", "w") as h5:
        h5.create_dataset("exchange/data", data=volume, chunks=(1, ny, nx))
        h5.create_dataset("gzip", data=volume, chunks=(32, 32, 32), compression="gzip")
    zarr.create_array(folder / "v.zarr", data=volume, chunks=(32, 32, 32))
    ome = zarr.open_group(folder / "v.ome.zarr", mode="w")
    ome.create_array("0", data=volume, chunks=(1, ny, nx))
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    scale = [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    level = {"path": "0", "coordinateTransformations": scale}
    ome.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [level]}]}
    for kind in ("tif", "png"):
        (folder / kind).mkdir()
        for i, plane in enumerate(volume):
            if kind == "tif":
                tifffile.imwrite(folder / kind / f"s{i}.tif", plane)
            else:
                Image.fromarray(plane).save(folder / kind / f"s{i}.png")
    volume.tofile(folder / "v.raw")
    return {
        "TIFF (multipage)": str(folder / "v.tif"),
        "HDF5, 1 slice per chunk": f"{folder / 'v.h5'}:/exchange/data",
        "HDF5, gzip 32³ chunks": f"{folder / 'v.h5'}:/gzip",
        "Zarr v3, zstd 32³ chunks": str(folder / "v.zarr"),
        "OME-Zarr 0.5, 1 slice per chunk": str(folder / "v.ome.zarr"),
        "folder of TIFF slices": str(folder / "tif"),
        "folder of PNG slices": str(folder / "png"),
        "raw (memory map)": f"{folder / 'v.raw'}:{nz}x{ny}x{nx}:uint8",
    }


def _best(repeats: int, run) -> tuple[float, float]:
    """(fastest wall s, fastest CPU s) of ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def _measure(source: str, volume: np.ndarray, repeats: int) -> dict[str, object]:
    mid = volume.shape[0] // 2, volume.shape[1] // 2

    def every_z() -> None:
        with open_stack(source) as stack:
            for i, image in stack.iter_slices("z"):
                assert np.array_equal(image, volume[i])

    with open_stack(source) as stack:
        assert np.array_equal(stack.slice("z", mid[0]), volume[mid[0]])
        assert np.array_equal(stack.slice("y", mid[1]), volume[:, mid[1]])
        tracemalloc.start()
        stack.slice("z", mid[0])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        z = _best(repeats, lambda: stack.slice("z", mid[0]))
        y = _best(repeats, lambda: stack.slice("y", mid[1]))
    return {
        "open": _best(repeats, lambda: open_stack(source).close()),
        "z slice": z,
        "y slice": y,
        "every z": _best(repeats, every_z),
        "peak MiB": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    volume = tifffile.imread(DATA)
    print(f"volume {volume.shape} {volume.dtype}, {volume.nbytes / 2**20:.1f} MiB")
    print("| format | open | one z slice | one y slice | every z slice | peak (one z) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in _write_all(volume, Path(tmp)).items():
            m = _measure(source, volume, args.repeat)
            cells = [f"{m[k][0] * 1e3:.1f} ms (CPU {m[k][1] * 1e3:.1f})" for k in
                     ("open", "z slice", "y slice", "every z")]  # fmt: skip
            print(f"| {name} | {' | '.join(cells)} | {m['peak MiB']:.2f} MiB |")


if __name__ == "__main__":
    main()
