"""Train a semantic network on a dataset version and register it.

load the labelled slices → build the network (or fine-tune a registered parent) →
register a candidate model version and open a training run → train with per-epoch
checkpoints → evaluate on the test split → store checkpoint and learning curve as
artifacts, the curve and scores as metrics → close the run.

Running the same request again after a crash resumes from the last finished epoch (the
checkpoint folder is keyed by the request); after success it returns the model it made.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tomoloop.names import check_name
from tomoloop.services import (
    Services,
    evaluate_registered,
    fit_semantic,
    initial_network,
    plan_semantic,
    training_run,
    training_slices,
)
from tomoloop.training.trainer import resolve_device

# Its own task run, tagged for a concurrency limit (`prefect concurrency-limit create
# training 1`: one fit at a time on a one-GPU machine); not cached — its inputs are live.
fit = task(fit_semantic, name="fit", tags=["training"], cache_policy=NO_CACHE)


@flow(name="train")
def train_semantic(
    dataset_version_id: int,
    arch: str = "unet",
    name: str | None = None,
    config: dict | None = None,
    options: dict | None = None,
    device: str = "auto",
    parent: int | None = None,
    freeze_prefixes: tuple[str, ...] = (),
    tier_weights: str = "",
) -> dict:
    """Train ``arch`` on a dataset version; ``{"model_version": id, ...}``.

    ``config`` holds :class:`tomoloop.training.TrainConfig` fields (``augmentation`` as a
    dict of :class:`tomoloop.training.Augmentation` fields); ``options`` go to the network.
    """
    if name is not None:
        check_name(name, "model name")
    log = get_run_logger()
    with Services.from_settings() as services:
        plan = plan_semantic(
            services, dataset_version_id, arch, config, options, parent, freeze_prefixes,
            tier_weights,
        )  # fmt: skip
        if plan.folder.done is not None:
            log.info("this request already trained model %s", plan.folder.done.model_version)
            return plan.folder.done.to_dict()
        slices = training_slices(services, plan)  # before anything is registered
        network = initial_network(services, plan, log)
        torch_device = resolve_device(device)
        model_name = name or plan.dataset.name
        folder = plan.folder.path
        with training_run(
            services, folder, plan.request, model_name, arch, "torch", str(torch_device)
        ) as run:
            trained = fit(services, plan, network, slices, run, torch_device, log)
        (folder / "last.pt").unlink(missing_ok=True)
        log.info("model %s: %s mIoU %.4f", run.model_id, trained.split, trained.scores["mIoU"])
        return trained.to_dict()


@flow(name="evaluate")
def evaluate_model(
    model_id: int,
    dataset_version_id: int,
    split: str = "test",
    device: str = "auto",
    tortuosity_class: int | None = None,
) -> dict:
    """Score a registered model on a split of a dataset version; the numbers are recorded
    as metrics of the model (with the dataset version and split) and returned. With
    ``tortuosity_class`` the class's in-plane tortuosity is compared too.
    """
    with Services.from_settings() as services:
        torch_device = resolve_device(device)
        return evaluate_registered(
            services, model_id, dataset_version_id, split, torch_device, tortuosity_class
        ).to_dict()
