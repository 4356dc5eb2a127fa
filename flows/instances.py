"""Mask R-CNN flows (Daemi et al. 2022; docs/references.md): train a particle detector on a dataset
version, and find, measure and classify the 3D particles of a volume with it.

train-maskrcnn:

load the labelled slices → write them as a COCO folder (every connected component of an
instance phase one instance) → register a candidate model version (backend detectron2)
and open a training run → train with checkpoints → COCO AP on the test split → store
the checkpoint as an artifact, the loss curve and AP as metrics → close the run.

The same request after a crash resumes from the last checkpoint; after success it
returns the model it made.

particles: predict on z, y and x slices → fuse, clean, watershed → measure particles,
flag slice artefacts and partial particles → optionally score each kept particle with a
registered flaw classifier → write labels, particles.csv, the size distribution, the
flaw volume and a summary into a new folder (all or nothing).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tomoloop.coco.convert import check_out
from tomoloop.particles.flaws import (
    FlawTrainConfig,
    read_examples,
    split_examples,
    train_classifier,
)
from tomoloop.particles.reassembly import ReassemblyOptions, VolumeError
from tomoloop.services import (
    Services,
    coco_for_training,
    fit_maskrcnn,
    load_registered_model,
    particle_labels,
    particle_report,
    plan_maskrcnn,
    read_grey,
    register_flaw_classifier,
    remove_resume_points,
    training_run,
)
from tomoloop.stacks.opener import source_name
from tomoloop.training.trainer import resolve_device

# Tagged like the semantic fit (`flows/train.py`) for the same concurrency limit.
fit_instances = task(fit_maskrcnn, name="fit-maskrcnn", tags=["training"], cache_policy=NO_CACHE)


@flow(name="train-maskrcnn")
def train_maskrcnn(
    dataset_version_id: int,
    name: str | None = None,
    config: dict | None = None,
    instances: tuple[str, ...] = (),
    device: str = "auto",
    parent: int | None = None,
) -> dict:
    """Train Mask R-CNN on a dataset version; ``{"model_version": id, "segm_AP": …}``.

    ``config`` holds :class:`tomoloop.adapters.detectron2.MaskRCNNConfig` fields;
    ``instances`` names the phases whose particles are instances (default: all but the
    first phase); ``parent`` a registered Mask R-CNN to start from.
    """
    log = get_run_logger()
    with Services.from_settings() as services:
        plan = plan_maskrcnn(services, dataset_version_id, config, instances, parent)
        torch_device = resolve_device(device)  # every option before the run folder is made
        if plan.folder.done is not None:
            log.info("this request already trained model %s", plan.folder.done.model_version)
            return plan.folder.done.to_dict()
        coco = coco_for_training(services, plan)
        model_name, folder = name or plan.dataset.name, plan.folder.path
        with training_run(
            services, folder, plan.request, model_name, "maskrcnn", "detectron2", str(torch_device)
        ) as run:
            trained = fit_instances(services, plan, coco, run, torch_device, log)
        remove_resume_points(folder)
        log.info("model %s: %s segm AP %.4f", run.model_id, coco.split, trained.scores["segm_AP"])
        return trained.to_dict()


@flow(name="particles")
def particles(
    gray: str,
    model_id: int,
    out_dir: str,
    axes: str = "zyx",
    voxel_size: tuple[float, float, float] | None = None,
    flaw_model_id: int | None = None,
    options: dict | None = None,
    bin_um: float = 0.5,
    overwrite: bool = False,
    device: str = "auto",
    phase: str | None = None,
    partial_rule: str = "slice",
) -> dict:
    """3D particles of a grey stack with a registered Mask R-CNN; the summary (also in
    ``out_dir/summary.json``). ``options`` hold :class:`tomoloop.particles.ReassemblyOptions`
    fields; ``bin_um`` is the size-distribution bin in µm; ``phase`` the model category
    that makes the particles (needed when it finds more than one); ``partial_rule`` how
    particles cut by the edge are told (:func:`tomoloop.particles.partial_particles`).
    """
    log = get_run_logger()
    reassembly = ReassemblyOptions.from_options(options or {})
    if bin_um <= 0:
        raise VolumeError(f"bin {bin_um} µm: the size-distribution bin must be > 0")
    check_out(Path(out_dir), overwrite)  # before the work, not after it
    torch_device = resolve_device(device)
    with Services.from_settings() as services:
        net, _ = load_registered_model(services, model_id, torch_device, "maskrcnn")
        classifier = None
        if flaw_model_id is not None:
            classifier = load_registered_model(services, flaw_model_id, torch_device, "flaws").net
    grey = read_grey(gray, voxel_size)
    if not grey.has_voxel_size:
        log.warning("%s has no voxel size (give --voxel-size): lengths are in voxels", gray)
    log.info("predicting %s slices of %s", "/".join(axes), source_name(gray))
    labels = particle_labels(net, grey, axes, phase, reassembly)
    header = {"gray": gray, "model_version": model_id, "flaw_model_version": flaw_model_id}
    summary = particle_report(
        grey, labels, classifier, header | {"partial_rule": partial_rule}, bin_um,
        Path(out_dir), overwrite, torch_device,
    )  # fmt: skip
    log.info("%(kept)d of %(particles)d particles kept; written to %(out_dir)s", summary)
    return summary


@flow(name="train-flaw-classifier")
def train_flaw_classifier(
    slices_dir: str,
    name: str = "flaws",
    config: dict | None = None,
    val_fraction: float = 0.2,
    device: str = "auto",
) -> dict:
    """Train the flaw classifier on ``slices_dir/flawed/*.png`` and ``…/unflawed/*.png`` (grey
    slices of masked particles, as Daemi et al. 2022, §4, trained on) and register it (architecture
    flawnet); ``{"model_version": id, "val_accuracy": …}``.
    """
    log = get_run_logger()
    flaw_config = FlawTrainConfig(**(config or {}))
    train, val = split_examples(*read_examples(Path(slices_dir)), val_fraction, flaw_config.seed)
    result = train_classifier(
        train,
        val,
        flaw_config,
        resolve_device(device),
        on_epoch=lambda e, loss, acc: log.info(
            "epoch %d: loss %.4f, val accuracy %.3f", e, loss, acc
        ),
    )
    with Services.from_settings() as services:
        return register_flaw_classifier(
            services, name, result, flaw_config, slices_dir, val_fraction,
            (len(train[0]), len(val[0])),
        ).to_dict()  # fmt: skip
