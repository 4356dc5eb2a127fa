import json

import numpy as np
import pytest
import tifffile

from tomoloop.demo import DemoInputs, run_demo
from tomoloop.errors import TomoloopError
from tomoloop.phases import PhaseMap


def test_demo_on_the_generated_sample_produces_coco_overlay_and_summary(tmp_path):
    result = run_demo(tmp_path / "demo")
    assert result["self_check_segm_ap"] == pytest.approx(1.0)
    fractions = result["phase_fractions"]
    assert set(fractions) == {"pore", "nmc", "cbd"}
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert 0.2 < fractions["nmc"] < 0.5 and 0.05 < fractions["cbd"] < 0.15
    assert result["coco"]["instances"]["train"] > 100
    assert (tmp_path / "demo" / "overlay.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "demo" / "summary.json").read_text()) == json.loads(
        json.dumps(result)
    )
    assert "self-check" in (tmp_path / "demo" / "summary.md").read_text()


def test_demo_on_user_stacks(tmp_path, electrode_volume):
    gray, labels = tmp_path / "g.tif", tmp_path / "l.tif"
    tifffile.imwrite(gray, (electrode_volume * 70 + 30).astype(np.uint8))
    tifffile.imwrite(labels, electrode_volume)
    result = run_demo(
        tmp_path / "demo",
        DemoInputs(
            gray=gray,
            labels=labels,
            phases=PhaseMap.parse("pore=0,nmc=1,cbd=2"),
            instance_phases=("nmc",),
            voxel_size=(1.0, 1.0, 1.0),
        ),
    )
    assert result["coco"]["categories"] == ["nmc"]
    assert result["voxel_size_um"] == [1.0, 1.0, 1.0] or result["voxel_size_um"] == (1.0,) * 3


def test_demo_needs_both_stacks(tmp_path):
    with pytest.raises(TomoloopError, match="both --gray and --labels"):
        run_demo(tmp_path, DemoInputs(gray=tmp_path / "g.tif"))
