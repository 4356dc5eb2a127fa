import numpy as np
import porespy as ps
import pytest
import taufactor

from tomoloop.errors import TomoloopError
from tomoloop.metrics.semantic import volume_fractions
from tomoloop.metrics.structure import (
    microstructure,
    percolates,
    specific_surface_area,
    tortuosity,
)


def test_tortuosity_is_taufactors_own_result_on_a_porespy_volume():
    blobs = ps.generators.blobs(shape=[32, 32, 32], porosity=0.45, blobiness=1, seed=3)
    for axis, moved in (("z", blobs), ("x", np.moveaxis(blobs, 2, 0))):
        direct = taufactor.Solver(np.ascontiguousarray(moved).astype(np.uint8), device="cpu")
        expected = float(np.asarray(direct.solve(verbose=False)).ravel()[0])
        assert tortuosity(blobs, axis) == pytest.approx(expected, rel=1e-6)
        assert expected > 1.2  # a real detour, not a trivial case


def test_straight_channels_have_tortuosity_one_and_blocked_ones_infinity():
    channels = np.zeros((10, 12, 12), bool)
    channels[:, :, :6] = True  # a slab open along z and y, closed along x
    assert tortuosity(channels, "z") == pytest.approx(1.0, abs=1e-3)
    assert tortuosity(channels, "y") == pytest.approx(1.0, abs=1e-3)
    assert not percolates(channels, "x") and tortuosity(channels, "x") == float("inf")
    with pytest.raises(TomoloopError, match="axis 'w'"):
        tortuosity(channels, "w")


@pytest.mark.slow  # > 20 s
def test_fractions_surface_and_document_shape():
    zz, yy, xx = np.mgrid[:48, :48, :48]
    ball = (zz - 24) ** 2 + (yy - 24) ** 2 + (xx - 24) ** 2 <= 16**2
    sphere_area = 4 * np.pi * 16**2  # µm² at 0.5 µm voxels: (4π r²)·0.25 / (48³·0.125)
    ssa = specific_surface_area(ball, (0.5, 0.5, 0.5))
    assert ssa == pytest.approx(sphere_area * 0.25 / (48**3 * 0.125), rel=0.1)
    assert specific_surface_area(np.zeros((4, 4, 4), bool), (1, 1, 1)) == 0
    labels = ball.astype(np.uint8)
    np.testing.assert_allclose(volume_fractions(labels, 3), [1 - ball.mean(), ball.mean(), 0])
    doc = microstructure(labels, ("pore", "nmc", "cbd"), (0.5, 0.5, 0.5), axes="zy")
    assert doc["voxel_size_um"] == [0.5, 0.5, 0.5]
    assert doc["phases"]["nmc"]["tortuosity"] == {"z": None, "y": None}  # an isolated ball
    assert doc["phases"]["pore"]["tortuosity"]["z"] > 1
    assert doc["phases"]["cbd"]["volume_fraction"] == 0


def test_buffered_solver_sums_neighbours_as_taufactor_does_into_one_buffer():
    from tomoloop.metrics.sor import BufferedSolver

    blobs = ps.generators.blobs(shape=[20, 24, 28], porosity=0.5, blobiness=1, seed=1)
    image = blobs.astype(np.uint8)
    ours, theirs = BufferedSolver(image, device="cpu"), taufactor.Solver(image, device="cpu")
    ours.field.uniform_()
    theirs.field.copy_(ours.field)
    first = ours.sum_weighted_neighbours()
    assert first.data_ptr() == ours.sum_weighted_neighbours().data_ptr()  # no new volume
    assert np.array_equal(first.numpy(), theirs.sum_weighted_neighbours().numpy())
    assert ours.solve(verbose=False) == theirs.solve(verbose=False)


def test_tortuosity_only_for_the_transport_phases_asked_for():
    labels = np.zeros((8, 10, 10), np.uint8)
    labels[:, :, 5:] = 1
    doc = microstructure(labels, ("pore", "nmc"), None, axes="z", transport=["nmc"])
    assert doc["phases"]["pore"]["tortuosity"] == {}
    assert doc["phases"]["nmc"]["tortuosity"]["z"] == pytest.approx(1.0, abs=1e-3)
    assert doc["phases"]["pore"]["volume_fraction"] == pytest.approx(0.5)
    with pytest.raises(TomoloopError, match="tortuosity phase 'cbd'"):
        microstructure(labels, ("pore", "nmc"), None, transport=["cbd"])


def test_fitting_threads_never_raise_torchs_count_and_put_it_back():
    import os

    import torch

    from tomoloop.cores import fitting_threads, idle_cores

    before = torch.get_num_threads()
    assert 1 <= idle_cores(0.01) <= len(os.sched_getaffinity(0))
    with fitting_threads(before + 5) as used:
        assert used == before == torch.get_num_threads()
    with fitting_threads(1) as used:
        assert used == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_idle_cores_without_cpu_affinity_counts_every_core(monkeypatch):
    """Where the OS has no ``sched_getaffinity`` (macOS) or no /proc/stat, every core is
    usable: prediction and scoring must not fail there."""
    import os

    from tomoloop import cores

    monkeypatch.delattr(os, "sched_getaffinity")
    assert 1 <= cores.idle_cores(0.01) <= (os.cpu_count() or 1)

    def no_proc() -> tuple[int, int]:
        raise OSError("no /proc/stat")

    monkeypatch.setattr(cores, "_cpu_times", no_proc)
    assert cores.idle_cores(0.01) == (os.cpu_count() or 1)
