"""Region tasks in Label Studio: the region drawn as a rectangle (percent of the image) and
back, and a painted brush mask kept only inside the region (sparse labels)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tomoloop.active.regions import Region
from tomoloop.labels.masks import decode_class_mask, encode_class_mask, labelled_pixels
from tomoloop.labels.phases import IGNORE
from tomoloop.labels.studio_json import (
    PulledAnnotation,
    TaskSpec,
    brush_results,
    draws_regions,
    labeling_config,
    mask_from_results,
    offered_labels,
    rectangle_window,
    region_rectangle,
)

NAMES = ("pore", "nmc", "cbd")


@st.composite
def _tiles(draw):
    """An (H, W) slice and a tile of it (which may reach past its edge)."""
    h, w = draw(st.integers(1, 2000)), draw(st.integers(1, 2000))
    y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
    size = draw(st.integers(1, 2 * max(h, w)))
    return (h, w), Region(1, "z", 0, y0, x0, size)


@given(_tiles())
def test_a_region_drawn_as_a_rectangle_in_percent_comes_back_as_its_pixels(tile):
    shape, region = tile
    result = region_rectangle(region.window, shape)
    value = result["value"]
    assert result["readonly"] and value["rectanglelabels"] == ["label inside"]
    assert value["x"] >= 0 and value["x"] + value["width"] <= 100 + 1e-9
    rows, columns = rectangle_window(result, shape)
    drawn = np.zeros(shape, bool)
    drawn[rows, columns] = True
    np.testing.assert_array_equal(drawn, region.mask(shape))


@given(
    hnp.arrays(
        np.uint8,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
        elements=st.integers(0, 2),
    ),
    st.data(),
)
def test_a_brush_mask_kept_inside_a_region_is_the_sparse_label_of_its_pixels(painted, data):
    h, w = painted.shape
    region = Region(
        1,
        "z",
        0,
        data.draw(st.integers(0, h - 1)),
        data.draw(st.integers(0, w - 1)),
        data.draw(st.integers(1, 30)),
    )
    back = mask_from_results(brush_results(painted, NAMES), (h, w), NAMES)
    sparse = region.keep(back)
    inside = region.mask((h, w))
    np.testing.assert_array_equal(sparse[inside], painted[inside])
    assert (sparse[~inside] == IGNORE).all()
    document = encode_class_mask(sparse)
    assert labelled_pixels(document) == region.pixels((h, w)) == inside.sum()
    np.testing.assert_array_equal(decode_class_mask(document), sparse)


def test_a_region_task_names_its_region_and_a_whole_slice_task_none():
    annotation = {"id": 5, "result": [], "updated_at": "t"}
    region = {"key": "slice-1:round-2", "region": {"y0": 3, "x0": 4, "size": 8}}
    pulled = PulledAnnotation.from_label_studio(9, region, annotation)
    assert pulled.region == {"y0": 3, "x0": 4, "size": 8}
    whole = PulledAnnotation.from_label_studio(9, {"key": "slice-1:round-2"}, annotation)
    assert whole.region is None


def test_the_region_view_draws_the_region_and_the_slice_view_does_not():
    assert '<RectangleLabels name="region" toName="image"' in labeling_config(NAMES, region=True)
    assert "RectangleLabels" not in labeling_config(NAMES)
    # read back from a project's view: what a push may draw, and the labels offered
    assert draws_regions(labeling_config(NAMES, region=True))
    assert not draws_regions(labeling_config(NAMES))
    assert offered_labels(labeling_config(NAMES, region=True)) == list(NAMES)


def test_a_region_task_without_its_rectangle_still_names_its_region():
    from tomoloop.services.labelstudio import region_task

    task = TaskSpec("slice-1:round-1", {"image": "i.png"}, {"volume": "v"})
    region = Region(0, "z", 0, 2, 3, 4)
    label = region.keep(np.ones((8, 8), np.uint8))
    drawn = region_task(task, region, (8, 8), label, NAMES)
    bare = region_task(task, region, (8, 8), label, NAMES, drawn=False)
    assert drawn.meta["region"] == bare.meta["region"] == {"y0": 2, "x0": 3, "size": 4}
    assert [r["from_name"] for r in drawn.prediction] == ["phase", "region"]
    assert [r["from_name"] for r in bare.prediction] == ["phase"]


def test_pull_says_how_many_of_its_labels_came_from_region_tasks(capsys):
    from tomoloop.cli.labelstudio import _show_pull

    counts = {"stored": 3, "skipped": 0, "rejected": 1, "seen": 0}
    _show_pull({**counts, "regions": {"stored": 2, "skipped": 0, "rejected": 1, "seen": 0}})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "  of which region tasks (sparse labels): stored 2, skipped 0, rejected 1"
    _show_pull(counts)
    assert len(capsys.readouterr().out.splitlines()) == 1
