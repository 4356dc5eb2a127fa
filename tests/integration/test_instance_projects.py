"""Instance projects on the real Label Studio: a round's slices go out with a Mask R-CNN's
particles pre-filled (one region each), a person splits touching particles, the sync
stores the drawing as an instance label, and Mask R-CNN trains on it.
"""

import json
import os
import uuid

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tomoloop.adapters.labelstudio import LabelStudioClient
from tomoloop.cli import app
from tomoloop.db.models import Kind
from tomoloop.db.registry import Registry, RegistryError
from tomoloop.labels.masks import InstanceMasks, decode_instances
from tomoloop.labels.studio_json import instance_results, instances_from_results, offered_labels

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
NAMES = ("pore", "nmc", "cbd")
TINY = {
    "iterations": 6,
    "depth": 18,
    "norm": "FrozenBN",
    "lr": 1e-3,
    "min_size": 48,
    "score_threshold": 0.0,  # an untrained model's particles, kept so there are some
    "detections_per_image": 4,
}


def _split_particles(labels: np.ndarray) -> InstanceMasks:
    """The nmc particles of a label slice as a person would draw them: each connected
    component one particle, the largest cut in two at its middle column."""
    n, components = cv2.connectedComponents((labels == 1).view(np.uint8), connectivity=8)
    masks = [components == k for k in range(1, n)]
    big = max(range(len(masks)), key=lambda k: masks[k].sum())
    columns = np.flatnonzero(masks[big].any(axis=0))
    middle = columns[len(columns) // 2]
    left = masks[big].copy()
    left[:, middle:] = False
    masks[big] = masks[big] & ~left
    masks.append(left)
    return InstanceMasks(np.array(masks), np.ones(len(masks), np.int64), (1,))


@pytest.mark.slow  # trains a network
def test_particles_go_out_pre_filled_and_a_drawn_split_trains_mask_rcnn(
    tmp_path, label_studio, label_studio_env, electrode_volume, ingest_electrode
):
    from tomoloop.adapters import detectron2
    from tomoloop.adapters.labelstudio_registry import instances_title
    from tomoloop.flows.instances import train_maskrcnn
    from tomoloop.flows.labelstudio import push_round, sync_annotations
    from tomoloop.inference.predict import normalise
    from tomoloop.particles.instances import detected_particles, grey_uint8, write_coco_folder
    from tomoloop.services import Services, dataset_slices, load_registered_model
    from tomoloop.stacks.opener import open_stack
    from tomoloop.stacks.window import percentile_window

    name = f"nmc-{uuid.uuid4().hex[:8]}"
    ingest_electrode(tmp_path, electrode_volume, noise=8.0, name=name)
    registry = Registry.from_url(os.environ["TOMOLOOP_DATABASE_URL"])
    client = LabelStudioClient(*label_studio.credentials())
    v1 = registry.dataset(name)
    first = train_maskrcnn(v1.id, config=TINY, instances=("nmc",), device="cpu")["model_version"]
    pool = registry.pool(v1.id)  # the two train slices with the most nmc
    chosen = sorted(pool, key=lambda p: -(electrode_volume[p.index] == 1).sum())[:2]
    round_id = registry.open_round(name, "disagreement", None, [(p.slice_id, 0.5) for p in chosen])

    semantic = registry.register_model(name, "unet", "torch", v1.id)
    with pytest.raises(RegistryError, match="is a torch model; this command needs a Mask R-CNN"):
        push_round(round_id, instance_model=semantic, device="cpu")
    assert client.find_project(instances_title(name)) is None  # refused before any push

    pushed = push_round(round_id, instance_model=first, device="cpu")
    assert pushed["tasks"] == 2 and pushed["instances"]["tasks"] == 2
    assert push_round(round_id, instance_model=first, device="cpu")["instances"]["tasks"] == 2
    project = client.find_project(instances_title(name))
    assert project == pushed["instances"]["project"]
    assert offered_labels(client.label_config(project)) == ["nmc"]
    tasks = {t.data["key"]: t for t in client.sdk.tasks.list(project=project, fields="all")}
    assert len(tasks) == 2  # the re-push duplicated nothing

    # each task shows the model's particles of its slice, one region per detection
    services = Services.from_settings()
    net, _ = load_registered_model(services, first, torch.device("cpu"), "maskrcnn")
    target = chosen[0]
    with open_stack(target.volume_path) as stack:
        image = normalise(stack.slice(target.axis, target.index), percentile_window(stack))
    expected = detected_particles(detectron2.predict(net, [grey_uint8(image)])[0], ["nmc"], NAMES)
    task = tasks[f"slice-{target.slice_id}:round-{round_id}"]
    (prediction,) = task.predictions
    assert prediction.model_version == str(first) and len(expected) > 0
    assert [r["value"]["brushlabels"] for r in prediction.result] == [["nmc"]] * len(expected)
    shown = instances_from_results(prediction.result, image.shape, NAMES, ["nmc"])
    np.testing.assert_array_equal(shown.masks, expected.masks[expected.masks.any(axis=(1, 2))])
    assert {"image", "before_1", "after_1"} <= set(task.data)
    assert task.data["particle_phases"] == ["nmc"]

    # a person splits the biggest particle and submits; the sync stores the drawing
    drawn = _split_particles(electrode_volume[target.index])
    client.submit(task.id, instance_results(drawn, NAMES), lead_time_s=95)
    synced = sync_annotations(name)
    assert synced["instances"]["stored"] == 1 and synced["stored"] == 0
    assert sync_annotations(name)["instances"]["seen"] == 1
    (event,) = registry.ls_events("stored")
    label = registry.annotation(event.annotation_id)
    assert label.kind == Kind.INSTANCE and label.lead_time_s == 95
    stored = decode_instances(label.mask_rle)
    np.testing.assert_array_equal(stored.masks, drawn.masks)
    assert stored.covers == (1,)
    assert registry.open_rounds(name) == [round_id]  # the semantic tasks are still to do

    # the refreshed dataset carries it, and Mask R-CNN's COCO takes it over the components
    refreshed = CliRunner().invoke(app, ["registry", "refresh", "--dataset", name, "--json"])
    assert refreshed.exit_code == 0, refreshed.output
    (row,) = json.loads(refreshed.stdout)
    assert row["version"] == 2 and row["counts"]["train"]["instances"] == 1
    v2 = registry.dataset(name)
    slices = dataset_slices(services, v2)
    (member,) = [s for s in slices["train"] if s.instances is not None]
    files = write_coco_folder(slices, NAMES, (1,), tmp_path / "coco")
    document = json.loads(files["train"].read_text())
    image_id = next(k for k, s in enumerate(slices["train"]) if s is member) + 1
    areas = [a["area"] for a in document["annotations"] if a["image_id"] == image_id]
    assert areas == [int(m.sum()) for m in drawn.masks]
    # connectedComponents counts the background too: so this is one more than the label
    # slice's particles — the one the person split
    assert len(areas) == cv2.connectedComponents((member.labels == 1).view(np.uint8))[0]
    services.close()

    second = train_maskrcnn(v2.id, config=TINY, instances=("nmc",), device="cpu")
    assert registry.model(second["model_version"]).dataset_version_id == v2.id
    assert registry.models_trained_on(label.id) == [second["model_version"]]
