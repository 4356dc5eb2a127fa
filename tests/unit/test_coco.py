import dataclasses
import itertools
import json

import cc3d
import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tomoloop.coco.convert import (
    CocoOptions,
    _json_items,
    _with_particle_ids,
    convert_stack,
    instance_annotations,
)
from tomoloop.coco.instances import batch_instances, mask_polygons, slice_instances
from tomoloop.coco.particles import ParticleLinker, components, touching_pairs
from tomoloop.errors import OutputError, PhaseMapError, StackValidationError
from tomoloop.labels.phases import PhaseMap
from tomoloop.metrics.coco import self_consistency_ap
from tomoloop.stacks.opener import open_stack

# fill=st.nothing(): draw every pixel (hypothesis otherwise fills most of an array with one
# value, which would leave touching objects, holes and bridges rare)
binary_images = hnp.arrays(
    np.bool_,
    st.tuples(st.integers(1, 48), st.integers(1, 48)),
    elements=st.booleans(),
    fill=st.nothing(),
)


def _decode_union(rles, shape):
    if not rles:
        return np.zeros(shape, dtype=bool)
    return mask_utils.decode(rles).any(axis=2)


@settings(max_examples=150, deadline=None)
@given(image=binary_images, connectivity=st.sampled_from([4, 8]))
def test_rle_round_trip_is_exact(image, connectivity):
    found = slice_instances(image.astype(np.uint8), (1,), connectivity)
    np.testing.assert_array_equal(_decode_union(found.rles, image.shape), image)
    labels = found.labels[0]
    for k, rle in enumerate(found.rles):
        component = labels == k + 1
        decoded = mask_utils.decode(rle).astype(bool)
        np.testing.assert_array_equal(decoded, component)  # one instance = one component
        assert rle == _pycocotools_rle(component)  # byte-identical to pycocotools' encoder
        assert found.areas[k] == component.sum()
        assert found.bboxes[k].tolist() == mask_utils.toBbox(rle).tolist()


@settings(max_examples=60, deadline=None)
@given(image=binary_images, polygons=st.booleans())
def test_annotations_are_written_as_the_stdlib_json_encoder_writes_them(image, polygons):
    """orjson writes the annotation items, particle ids are spliced in after: the same
    bytes as json.dumps of the annotations with their particle id last (exports unchanged).
    """
    found = slice_instances(image.astype(np.uint8), (1,), 8, polygons=polygons)
    anns = instance_annotations(found, 3, 11)
    assert _json_items(anns) == json.dumps(anns, separators=(",", ":"))[1:-1].encode("ascii")
    if anns:
        ids = [7 * k + 1 for k in range(len(anns))]
        linked = [{**a, "particle_id": i} for a, i in zip(anns, ids, strict=True)]
        expected = json.dumps(linked, separators=(",", ":"))[1:-1].encode("ascii")
        assert _with_particle_ids(_json_items(anns), ids) == expected


def _pycocotools_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@settings(max_examples=100, deadline=None)
@given(image=binary_images, min_area=st.integers(0, 6))
def test_min_area_removes_exactly_the_small_components(image, min_area):
    found = slice_instances(image.astype(np.uint8), (1,), 8, min_area)
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(image.astype(np.uint8), connectivity=8)
    small = np.isin(labels, np.flatnonzero(stats[:, 4] < min_area)) & image
    np.testing.assert_array_equal(_decode_union(found.rles, image.shape), image & ~small)
    assert found.removed == int((stats[1:, 4] < min_area).sum())
    assert all(a >= min_area for a in found.areas)


@pytest.mark.parametrize("shape", [(1000, 1200), (3, 70000)])
def test_rle_strings_match_pycocotools_for_long_runs(shape):
    image = np.zeros(shape, np.uint8)
    rng = np.random.default_rng(5)
    image[rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)] = 1
    image[: shape[0] // 2, : shape[1] // 3] = 1  # a big block: counts in the 10^5 range
    found = slice_instances(image, (1,), 8)
    labels = found.labels[0]
    for k, rle in enumerate(found.rles):
        assert rle == _pycocotools_rle(labels == k + 1)


def test_4_versus_8_connectivity():
    diagonal = np.eye(5, dtype=np.uint8)
    assert len(slice_instances(diagonal, (1,), 8).rles) == 1
    assert len(slice_instances(diagonal, (1,), 4).rles) == 5


def test_holes_and_cracks_are_kept():
    ring = np.zeros((20, 20), np.uint8)
    cv2.circle(ring, (10, 10), 8, 1, -1)
    cv2.circle(ring, (10, 10), 3, 0, -1)  # a void inside the particle
    ring[10, :] = 0  # a crack through it splits it in two
    found = slice_instances(ring, (1,), 8)
    assert len(found.rles) == 2
    decoded = _decode_union(found.rles, ring.shape)
    assert not decoded[10, 10] and not decoded[10, 4]
    np.testing.assert_array_equal(decoded, ring.astype(bool))


def test_more_than_255_instances_do_not_wrap_around():
    image = np.zeros((60, 60), np.uint8)
    image[::3, ::3] = 1  # 400 isolated pixels
    found = slice_instances(image, (1,), 8)
    assert len(found.rles) == 400
    assert found.labels[0].max() == 400


def test_a_batch_of_more_than_65536_components_keeps_each_ones_pixels():
    """Runs are sorted by component id with 16-bit keys below 65,536 ids: above, the
    full ids (no wrap-around)."""
    image = np.zeros((300, 300), np.uint8)
    image[::2, ::2] = 1  # 22,500 one-pixel components per slice, 90,000 in the batch
    expected = [[2 * (k % 150), 2 * (k // 150), 1, 1] for k in range(150 * 150)]
    for found in batch_instances([image] * 4, (1,)):
        assert found.bboxes.tolist() == expected
        assert found.rles[-1] == _pycocotools_rle(found.labels[0] == 150 * 150)


def test_empty_slice_has_no_instances():
    found = slice_instances(np.zeros((8, 9), np.uint8), (1, 2), 8)
    assert found.rles == [] and found.bboxes.shape == (0, 4) and found.removed == 0


def test_several_phases_become_several_categories():
    image = np.zeros((10, 10), np.uint8)
    image[1:3, 1:3] = 1
    image[5:8, 5:8] = 2
    image[1:3, 6:9] = 1
    found = slice_instances(image, (1, 2), 8)
    assert sorted(found.category_index.tolist()) == [0, 0, 1]


def test_areas_and_boxes_of_kept_components():
    image = np.zeros((10, 10), np.uint8)
    image[0, 0] = 1
    image[4:7, 2:6] = 1
    found = slice_instances(image, (1,), 8, min_area=2)
    assert found.removed == 1 and found.labels[0].max() == 1
    assert found.areas.tolist() == [12] and found.bboxes.tolist() == [[2, 4, 4, 3]]


def test_polygons_fill_the_ring_not_the_hole():
    ring = np.zeros((40, 40), np.uint8)
    cv2.circle(ring, (20, 20), 15, 1, -1)
    cv2.circle(ring, (20, 20), 6, 0, -1)
    polygons = mask_polygons(ring)
    assert len(polygons) == 1
    raster = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 40, 40)))
    assert raster[20, 20] == 0  # the hole stays open
    iou = (raster & ring).sum() / (raster | ring).sum()
    assert iou > 0.8


def test_polygons_of_tiny_objects_are_valid():
    image = np.zeros((5, 5), np.uint8)
    image[2, 2] = 1
    (polygon,) = mask_polygons(image)
    assert len(polygon) >= 6
    raster = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], 5, 5)))
    assert raster[2, 2] == 1


@settings(max_examples=60, deadline=None)
@given(
    volume=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 6), st.integers(1, 12), st.integers(1, 12)),
        elements=st.integers(0, 2),
        fill=st.nothing(),
    ),
    connectivity=st.sampled_from([4, 8]),
)
def test_streamed_particle_ids_are_the_particles_cc3d_finds(volume, connectivity):
    linker = ParticleLinker(connectivity)
    node_pixel = []  # (z, y, x) of one pixel of every 2D component, in node order
    for z, image in enumerate(volume):
        found = slice_instances(image, (1, 2), connectivity)
        linker.add(found.labels)
        for labels in found.labels:
            for i in range(1, labels.max(initial=0) + 1):
                y, x = np.argwhere(labels == i)[0]
                node_pixel.append((z, y, x))
    ours = linker.particle_ids()
    truth = cc3d.connected_components(volume, connectivity=26 if connectivity == 8 else 6)
    theirs = np.array([truth[p] for p in node_pixel], dtype=np.int64)
    assert len(ours) == len(theirs)
    pairs = set(zip(ours.tolist(), theirs.tolist(), strict=True))
    assert len(pairs) == len(set(ours.tolist())) == len(set(theirs.tolist()))  # a bijection
    if len(ours):
        assert ours[0] == 1 and set(ours.tolist()) == set(range(1, ours.max() + 1))


# ---------------------------------------------------------------- whole stacks


def _write(tmp_path, name, volume):
    path = tmp_path / name
    tifffile.imwrite(path, volume)
    return path


PHASES = PhaseMap.parse("pore=0,nmc=1,cbd=2")


def test_stack_conversion_writes_loadable_exact_coco(tmp_path, electrode_volume):
    labels_path = _write(tmp_path, "labels.tif", electrode_volume)
    gray = (electrode_volume * 100 + 20).astype(np.uint16)
    gray_path = _write(tmp_path, "gray.tif", gray)
    out = tmp_path / "coco"
    with open_stack(labels_path) as labels, open_stack(gray_path) as g:
        summary = convert_stack(
            labels, out, PHASES, CocoOptions(instance_phases=(1,), particle_ids=True), gray=g
        )
    doc = json.loads((out / "annotations.json").read_text())
    assert summary.slices == 20 and summary.images_written == 20 and summary.masks_written == 20
    assert [c["name"] for c in doc["categories"]] == ["nmc"]
    assert len(doc["images"]) == 20  # every slice, also those without particles
    ids = [a["id"] for a in doc["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    coco = COCO(str(out / "annotations.json"))
    for image in doc["images"]:
        z = image["index"]
        assert (out / "images" / image["file_name"]).is_file()
        mask = cv2.imread(str(out / image["mask_file"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, electrode_volume[z])  # class index = value here
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        union = _decode_union([a["segmentation"] for a in anns], mask.shape)
        np.testing.assert_array_equal(union, electrode_volume[z] == 1)
    # one particle keeps one id through its slices; the two particles differ
    particle_ids = {a["particle_id"] for a in doc["annotations"]}
    assert len(particle_ids) == 2
    assert self_consistency_ap(out / "annotations.json") == pytest.approx(1.0)


def test_split_files_partition_the_slices_with_a_gap(tmp_path, electrode_volume):
    labels_path = _write(tmp_path, "labels.tif", electrode_volume)
    options = CocoOptions(split=(0.6, 0.2, 0.2), gap=1)
    with open_stack(labels_path) as labels:
        convert_stack(labels, tmp_path / "a", PHASES, options)
        # the same bytes whatever the number of worker threads
        convert_stack(labels, tmp_path / "b", PHASES, dataclasses.replace(options, workers=3))
    owner = {}
    for name in ("train", "val", "test"):
        a = (tmp_path / "a" / f"{name}.json").read_bytes()
        assert a == (tmp_path / "b" / f"{name}.json").read_bytes()  # deterministic
        for image in json.loads(a)["images"]:
            owner[image["index"]] = name
    assert set(owner.values()) == {"train", "val", "test"}
    kept = sorted(owner)
    for i, j in itertools.pairwise(kept):
        if owner[i] != owner[j]:
            assert j - i > 1


@settings(max_examples=150, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 14), st.integers(1, 14)),
    densities=st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)),
    seed=st.integers(0, 2**32 - 1),
    diagonal=st.booleans(),
)
def test_touching_pairs_are_the_label_pairs_within_reach(shape, densities, seed, diagonal):
    """Brute force on two slices of connected components (sparse to solid, so that one
    component can lie inside another): every pixel of ``before`` against every pixel of
    ``now`` within one step (the same position; with diagonal, the 8 around it too)."""
    rng = np.random.default_rng(seed)
    before, now = (
        cv2.connectedComponents((rng.random(shape) < d).view(np.uint8), connectivity=8)[1]
        for d in densities
    )
    reach = 1 if diagonal else 0
    truth = {
        (int(before[y, x]), int(now[v, u]))
        for y, x in np.argwhere(before > 0)
        for v, u in np.argwhere(now > 0)
        if abs(int(v) - int(y)) <= reach and abs(int(u) - int(x)) <= reach
    }
    a, b = touching_pairs(before, now, diagonal)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == sorted(truth)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 30),
    edges=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=40),
)
def test_components_are_the_connected_components_of_the_edges(n, edges):
    edges = [(a, b) for a, b in edges if a < n and b < n]
    graph = np.zeros((n, n), np.uint8)  # connectivity by repeated squaring of adjacency
    graph[np.arange(n), np.arange(n)] = 1
    for a, b in edges:
        graph[a, b] = graph[b, a] = 1
    for _ in range(6):
        graph = np.minimum(graph.astype(np.int64) @ graph, 1).astype(np.uint8)
    a, b = (
        (np.array(side, np.int64) for side in zip(*edges, strict=True))
        if edges
        else (
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
        )
    )
    assert components(n, a, b).tolist() == [int(np.argmax(row)) for row in graph]


def test_a_component_bridging_two_particles_joins_them():
    before = np.zeros((5, 9), np.uint8)
    before[2, 1:3] = 1  # A
    before[2, 6:8] = 1  # B, separate from A in this slice
    now = np.zeros((5, 9), np.uint8)
    now[2, 2:7] = 1  # C overlaps both
    after = np.zeros((5, 9), np.uint8)
    after[0, 0] = 1  # D, touches nothing
    linker = ParticleLinker(8)
    for image in (before, now, after):
        linker.add(slice_instances(image, (1,)).labels)
    assert linker.particle_ids().tolist() == [1, 1, 1, 2]


def test_a_particle_keeps_its_id_across_split_gaps(tmp_path):
    volume = np.zeros((30, 16, 16), np.uint8)
    volume[:, 4:9, 4:9] = 1  # a column through every slice
    volume[3:6, 12:15, 12:15] = 1  # a small particle of its own
    labels_path = _write(tmp_path, "labels.tif", volume)
    with open_stack(labels_path) as labels:
        convert_stack(
            labels,
            tmp_path / "o",
            PHASES,
            CocoOptions(split=(0.4, 0.3, 0.3), gap=2, particle_ids=True),
        )
    ids = {}
    for name in ("train", "val", "test"):
        for ann in json.loads((tmp_path / "o" / f"{name}.json").read_text())["annotations"]:
            ids.setdefault(ann["area"], set()).add(ann["particle_id"])
    assert len(ids[25]) == 1  # the column: one particle in every split
    assert ids.get(9, set()).isdisjoint(ids[25])


def test_slicing_along_x_uses_yz_planes(tmp_path, electrode_volume):
    labels_path = _write(tmp_path, "labels.tif", electrode_volume)
    with open_stack(labels_path) as labels:
        convert_stack(labels, tmp_path / "x", PHASES, CocoOptions(axis="x", instance_phases=(2,)))
    doc = json.loads((tmp_path / "x" / "annotations.json").read_text())
    assert len(doc["images"]) == 48
    assert doc["images"][0]["file_name"] == "x00000.png"
    assert (doc["images"][0]["height"], doc["images"][0]["width"]) == (20, 40)


def test_polygon_option_writes_polygons_and_keeps_the_exact_rle(tmp_path, electrode_volume):
    labels_path = _write(tmp_path, "labels.tif", electrode_volume)
    with open_stack(labels_path) as labels:
        convert_stack(labels, tmp_path / "p", PHASES, CocoOptions(polygons=True))
    doc = json.loads((tmp_path / "p" / "annotations.json").read_text())
    assert all(isinstance(a["segmentation"], list) for a in doc["annotations"])
    assert all(a["rle"]["counts"] for a in doc["annotations"])
    COCO(str(tmp_path / "p" / "annotations.json"))


def test_undeclared_value_midway_leaves_nothing_behind(tmp_path, electrode_volume):
    electrode_volume[15, 3, 3] = 9
    labels_path = _write(tmp_path, "labels.tif", electrode_volume)
    out = tmp_path / "out"
    with open_stack(labels_path) as labels, pytest.raises(StackValidationError, match="z=15"):
        convert_stack(labels, out, PHASES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_failed_overwrite_keeps_the_previous_output(tmp_path, electrode_volume):
    good = _write(tmp_path, "good.tif", electrode_volume)
    electrode_volume[5, 0, 0] = 9
    bad = _write(tmp_path, "bad.tif", electrode_volume)
    out = tmp_path / "out"
    with open_stack(good) as labels:
        convert_stack(labels, out, PHASES)
    before = (out / "annotations.json").read_bytes()
    with open_stack(bad) as labels, pytest.raises(StackValidationError):
        convert_stack(labels, out, PHASES, overwrite=True)
    assert (out / "annotations.json").read_bytes() == before
    with open_stack(good) as labels, pytest.raises(OutputError, match="--overwrite"):
        convert_stack(labels, out, PHASES)


def test_shape_mismatch_and_float_labels_are_refused_before_writing(tmp_path, electrode_volume):
    labels_path = _write(tmp_path, "labels.tif", electrode_volume)
    gray_path = _write(tmp_path, "gray.tif", electrode_volume[:, :, :40])
    float_path = _write(tmp_path, "float.tif", electrode_volume.astype(np.float32))
    with (
        open_stack(labels_path) as labels,
        open_stack(gray_path) as gray,
        pytest.raises(StackValidationError, match="same voxels"),
    ):
        convert_stack(labels, tmp_path / "o1", PHASES, gray=gray)
    with open_stack(float_path) as labels, pytest.raises(StackValidationError, match="float32"):
        convert_stack(labels, tmp_path / "o2", PHASES)
    with open_stack(labels_path) as labels, pytest.raises(PhaseMapError):
        convert_stack(labels, tmp_path / "o3", PHASES, CocoOptions(instance_phases=(7,)))
    assert not any(p.name.startswith(("o1", "o2", "o3", ".o")) for p in tmp_path.iterdir())
