"""Detectron2 Mask R-CNN: configuration, training from a COCO folder, prediction.

Daemi et al. 2022 (§4, Label Generation and Mask R-CNN Training; docs/references.md): Mask R-CNN
with a ResNet-101 FPN backbone, learning rate 0.0001, every slice rotated and orthogonally flipped.
Here the backbone is R18/R50/R101, trained from scratch with GroupNorm (detectron2's
``scratch_mask_rcnn_R_50_FPN_3x_gn``) or from local pretrained weights given as a path — nothing is
downloaded. Grey slices are fed as three equal channels, so ImageNet/COCO weights load unchanged.

Training resumes from the last checkpoint in its folder, so a killed run loses at most
``checkpoint_every`` iterations. CUDA runs use automatic mixed precision.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

with warnings.catch_warnings():  # detectron2 imports deprecated torch.jit APIs
    warnings.simplefilter("ignore", FutureWarning)
    import detectron2
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import CfgNode, get_cfg
    from detectron2.data import DatasetMapper, build_detection_train_loader
    from detectron2.data import transforms as T
    from detectron2.data.datasets import load_coco_json
    from detectron2.data.samplers import TrainingSampler
    from detectron2.modeling import build_model
    from detectron2.solver import build_lr_scheduler, build_optimizer
    from detectron2.utils.events import EventStorage

from tomoloop.checkpoints import read_checkpoint
from tomoloop.errors import TomoloopError
from tomoloop.metrics.coco import instance_scores
from tomoloop.particles.instances import (
    CocoDocumentError,
    Detections,
    InstanceUncertainty,
    check_coco,
    detection_results,
    instance_uncertainty,
    particle_mask,
)
from tomoloop.paths import confined

_CONFIGS = Path(detectron2.__file__).parent / "model_zoo" / "configs"  # shipped with detectron2
_BASE = _CONFIGS / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_3x.yaml"
_SCRATCH_GN = _CONFIGS / "Misc" / "scratch_mask_rcnn_R_50_FPN_3x_gn.yaml"
for _name in ("detectron2", "fvcore"):  # their INFO lines flood flow logs
    logging.getLogger(_name).setLevel(logging.WARNING)
# detectron2 asks torch.fx whether it is tracing on every forward pass; torch warns about it
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


class Detectron2Error(TomoloopError):
    """Mask R-CNN cannot be trained or loaded as asked."""


@dataclass(frozen=True)
class MaskRCNNConfig:
    """How a Mask R-CNN is built and trained. Sizes are pixels.

    Attributes:
        depth: ResNet depth, 18, 34, 50 or 101 (Daemi et al. 2022, §4, used 101).
        norm: "GN" (GroupNorm; trains from scratch) or "FrozenBN" (for pretrained weights;
            from scratch only with a small ``lr`` and gradient clipping).
        weights: local detectron2/torchvision checkpoint path; "" starts from random init.
        iterations: optimiser steps.
        heads_iterations: the first steps that train the heads only (FPN, RPN, box and mask
            heads; the ResNet frozen), before every layer trains — the two-stage fine-tuning
            of a pretrained checkpoint (Daemi et al. 2022, §4, train the heads of a
            COCO-initialised model); 0 trains every layer from the start.
        lr: base learning rate (Daemi et al. 2022, §4: 1e-4).
        batch: images per step.
        min_size, max_size: shorter / longest image side the network sees.
        anchor_sizes: one anchor size per FPN level, pixels (particles are small).
        rois_per_image: sampled proposals per image for the heads.
        clip_gradients: gradient norm clip (0 switches it off).
        checkpoint_every: iterations between checkpoints (resume points).
        score_threshold: detections below this score are dropped at prediction.
        detections_per_image: most instances returned per slice.
        seed: random seed of weights, sampling and augmentation.
        workers: data-loading processes (0 loads in the training process).
    """

    depth: int = 101
    norm: str = "GN"
    weights: str = ""
    iterations: int = 3000
    heads_iterations: int = 0
    lr: float = 1e-4
    batch: int = 2
    min_size: int = 512
    max_size: int = 1024
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    rois_per_image: int = 128
    clip_gradients: float = 1.0
    checkpoint_every: int = 500
    score_threshold: float = 0.5
    detections_per_image: int = 200
    seed: int = 0
    workers: int = 0

    def __post_init__(self) -> None:
        if self.depth not in (18, 34, 50, 101):
            raise Detectron2Error(f"depth {self.depth}: use 18, 34, 50 or 101")
        if self.norm not in ("GN", "FrozenBN"):
            raise Detectron2Error(f"norm {self.norm!r}: use GN or FrozenBN")
        if self.weights and not Path(self.weights).is_file():
            raise Detectron2Error(
                f"weights file {self.weights} does not exist: give the path of a local "
                "checkpoint (nothing is downloaded), or no weights to train from scratch"
            )
        if min(self.iterations, self.batch, self.min_size, self.checkpoint_every) < 1:
            raise Detectron2Error("iterations, batch, min_size and checkpoint_every must be ≥ 1")
        if not 0 <= self.heads_iterations <= self.iterations:
            raise Detectron2Error(
                f"heads iterations {self.heads_iterations}: between 0 and the iterations "
                f"({self.iterations})"
            )
        if self.lr <= 0:
            raise Detectron2Error(f"lr {self.lr}: the learning rate must be > 0")
        if len(self.anchor_sizes) != 5:
            raise Detectron2Error("anchor_sizes: give one size per FPN level (5)")


def build_config(config: MaskRCNNConfig, n_classes: int, device: str) -> CfgNode:
    """The detectron2 config of a Mask R-CNN with ``n_classes`` instance categories."""
    cfg = get_cfg()
    cfg.merge_from_file(str(_SCRATCH_GN if config.norm == "GN" else _BASE))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = config.weights
    cfg.MODEL.RESNETS.DEPTH = config.depth
    if config.depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    if config.norm == "FrozenBN" and not config.weights:
        cfg.MODEL.BACKBONE.FREEZE_AT = 0  # nothing pretrained to keep
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s] for s in config.anchor_sizes]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = n_classes
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = config.rois_per_image
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = config.score_threshold
    cfg.TEST.DETECTIONS_PER_IMAGE = config.detections_per_image
    cfg.INPUT.MASK_FORMAT = "bitmask"  # exact RLE masks, holes and cracks included
    cfg.INPUT.MIN_SIZE_TRAIN = (config.min_size,)
    cfg.INPUT.MIN_SIZE_TEST = config.min_size
    cfg.INPUT.MAX_SIZE_TRAIN = config.max_size
    cfg.INPUT.MAX_SIZE_TEST = config.max_size
    cfg.SOLVER.BASE_LR = config.lr
    cfg.SOLVER.MAX_ITER = config.iterations
    cfg.SOLVER.IMS_PER_BATCH = config.batch
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = min(100, config.iterations // 10)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = config.clip_gradients > 0
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = config.clip_gradients or 1.0
    cfg.DATALOADER.NUM_WORKERS = config.workers
    cfg.SEED = config.seed
    return cfg


def augmentations(cfg: CfgNode) -> list[T.Augmentation]:
    """Daemi et al. 2022, §4: right-angle rotations and orthogonal flips, then the training
    resize."""
    return [
        T.RandomFlip(prob=0.5, horizontal=True, vertical=False),
        T.RandomFlip(prob=0.5, horizontal=False, vertical=True),
        T.RandomRotation([0, 90, 180, 270], expand=True, sample_style="choice"),
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, "choice"),
    ]


@dataclass(frozen=True)
class TrainOutcome:
    """losses: total loss per iteration (from the start, across resumes); checkpoint:
    the trained network as bytes for :func:`load`; resumed_after: iterations a previous
    run had done (0 for a fresh start).
    """

    losses: list[float]
    checkpoint: bytes
    resumed_after: int


def read_coco(coco_file: Path, image_root: Path) -> tuple[dict, dict[str, Path]]:
    """A checked COCO document and each image's path, confined to ``image_root``.

    Raises:
        CocoDocumentError: unreadable JSON, or a document that cannot train or be scored.
        PathConfinementError: an image file name that leaves ``image_root``.
    """
    try:
        document = json.loads(coco_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CocoDocumentError(f"{coco_file} cannot be read as COCO JSON: {exc}") from exc
    check_coco(document, str(coco_file))
    paths = {
        i["file_name"]: confined(image_root, i["file_name"], f"{coco_file} image {i['id']}")
        for i in document["images"]
    }
    return document, paths


def training_records(coco_file: Path, image_root: Path) -> tuple[list[dict], list[str]]:
    """Detectron2 dataset dicts of the images with instances, and the category names."""
    document, paths = read_coco(coco_file, image_root)
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        raise Detectron2Error(
            f"{len(missing)} images of {coco_file} are missing under {image_root}, "
            f"e.g. {missing[0]}: point the image root at the COCO export's images"
        )
    categories = sorted(document["categories"], key=lambda c: c["id"])
    contiguous = {c["id"]: k for k, c in enumerate(categories)}  # detectron2 classes are 0..n-1
    records = [r for r in load_coco_json(str(coco_file), str(image_root)) if r["annotations"]]
    for record in records:
        for ann in record["annotations"]:
            ann["category_id"] = contiguous[ann["category_id"]]
    return records, [c["name"] for c in categories]


def train(
    coco_file: Path,
    image_root: Path,
    config: MaskRCNNConfig,
    folder: Path,
    device: torch.device,
    on_iteration: Callable[[int, float], None] | None = None,
) -> TrainOutcome:
    """Train Mask R-CNN on a COCO file whose images lie under ``image_root``.

    Checkpoints go to ``folder``; a run over the same folder resumes from the last one.
    Raises :class:`Detectron2Error` when the loss stops being finite (lower ``lr``).
    """
    records, names = training_records(coco_file, image_root)
    cfg = build_config(config, len(names), str(device))
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # detectron2's augmentations draw from NumPy
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    folder.mkdir(parents=True, exist_ok=True)
    checkpointer = DetectionCheckpointer(
        model, str(folder), optimizer=optimizer, scheduler=scheduler
    )
    resuming = checkpointer.has_checkpoint()  # a resume point in this folder, not --weights
    loaded = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
    start = loaded.get("iteration", -1) + 1 if resuming else 0
    losses_file = folder / "losses.json"
    losses = json.loads(losses_file.read_text())[:start] if start and losses_file.exists() else []
    mapper = DatasetMapper(
        cfg, is_train=True, augmentations=augmentations(cfg), recompute_boxes=True
    )
    loader = build_detection_train_loader(
        records,
        mapper=mapper,
        sampler=TrainingSampler(len(records), seed=config.seed + start),
        total_batch_size=config.batch,
        num_workers=config.workers,
    )
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    backbone = [p for p in model.backbone.bottom_up.parameters() if p.requires_grad]
    model.train()
    with EventStorage(start) as storage:
        for iteration, batch in zip(range(start, config.iterations), loader, strict=False):
            storage.iter = iteration
            for p in backbone:  # the ResNet waits while the heads train first
                p.requires_grad_(iteration >= config.heads_iterations)
            with torch.autocast(device.type, enabled=amp):
                total = sum(model(batch).values())
            if not torch.isfinite(total):
                raise Detectron2Error(
                    f"the loss became {total.item()} at iteration {iteration}: lower the "
                    "learning rate, or use norm GN when training from scratch"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)  # clips after unscaling (cfg.SOLVER.CLIP_GRADIENTS)
            scaler.update()
            scheduler.step()
            losses.append(float(total.item()))
            if on_iteration is not None:
                on_iteration(iteration, losses[-1])
            done = iteration + 1
            if done % config.checkpoint_every == 0 and done < config.iterations:
                checkpointer.save("last", iteration=iteration)
                losses_file.write_text(json.dumps(losses))
    return TrainOutcome(losses, _pack(cfg, model, names, config), start)


def _pack(cfg: CfgNode, model: torch.nn.Module, names: list[str], config: MaskRCNNConfig) -> bytes:
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {"cfg": cfg.dump(), "model": state, "categories": names, "config": asdict(config)}, buffer
    )
    return buffer.getvalue()


@dataclass
class MaskRCNN:
    """A trained Mask R-CNN ready to predict; ``categories`` in class-index order."""

    model: torch.nn.Module
    cfg: CfgNode
    categories: list[str]
    config: MaskRCNNConfig

    @property
    def device(self) -> torch.device:
        return torch.device(self.cfg.MODEL.DEVICE)


def load(data: bytes, device: torch.device) -> MaskRCNN:
    """A network packed by :func:`train`, on ``device``, in eval mode."""
    saved = read_checkpoint(data, "the Mask R-CNN checkpoint")
    try:
        cfg = CfgNode.load_cfg(saved["cfg"])
    except Exception as error:
        raise Detectron2Error(f"not a tomoloop Mask R-CNN checkpoint ({error})") from error
    cfg.MODEL.DEVICE = str(device)
    cfg.MODEL.WEIGHTS = ""
    model = build_model(cfg)
    model.load_state_dict(saved["model"])
    model.eval()
    config = MaskRCNNConfig(**{**saved["config"], "weights": ""})
    return MaskRCNN(model, cfg, list(saved["categories"]), config)


def predict(net: MaskRCNN, images: Sequence[np.ndarray]) -> list[Detections]:
    """Instances on each (H, W) uint8 grey slice (any sizes), at the slice's resolution."""
    resize = T.ResizeShortestEdge(net.cfg.INPUT.MIN_SIZE_TEST, net.cfg.INPUT.MAX_SIZE_TEST)
    inputs = []
    for image in images:
        h, w = image.shape
        resized = resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(np.repeat(resized[None], 3, axis=0)))
        inputs.append({"image": tensor.float(), "height": h, "width": w})
    amp = net.device.type == "cuda"
    with torch.no_grad(), torch.autocast(net.device.type, enabled=amp):
        outputs = net.model(inputs)
    found = []
    for output in outputs:
        instances = output["instances"].to("cpu")
        found.append(
            Detections(
                instances.pred_masks.numpy().astype(bool),
                instances.scores.numpy().astype(np.float32),
                instances.pred_classes.numpy().astype(np.int64),
                instances.pred_boxes.tensor.numpy().astype(np.float32),
            )
        )
    return found


def evaluate(net: MaskRCNN, coco_file: Path, image_root: Path, batch: int = 4) -> dict[str, float]:
    """COCO AP (segm and bbox; AP, AP50, AP75 on the 0–1 scale) of ``net`` on the images
    of a COCO file, against its annotations.
    """
    document, paths = read_coco(coco_file, image_root)
    results: list[dict] = []
    images = document["images"]
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        greys = [cv2.imread(str(paths[i["file_name"]]), cv2.IMREAD_GRAYSCALE) for i in chunk]
        for info, grey in zip(chunk, greys, strict=True):
            if grey is None:
                raise Detectron2Error(f"image {paths[info['file_name']]} cannot be read")
        for info, found in zip(chunk, predict(net, greys), strict=True):
            results.extend(detection_results(found, info["id"]))
    return instance_scores(document, results)


def axis_masks(
    net: MaskRCNN,
    volume: np.ndarray,
    axes: Sequence[str] = ("z", "y", "x"),
    classes: Sequence[int] | None = None,
    batch: int = 4,
    on_slice: Callable[[str, int], None] | None = None,
) -> list[np.ndarray]:
    """Per slicing axis, the (Z, Y, X) bool mask of detected particles (of ``classes``, all when
    None) on every slice of a (Z, Y, X) uint8 volume along that axis (Daemi et al. 2022, §4: XY, XZ
    and YZ re-slices, fused afterwards).
    """
    masks = []
    for axis in axes:
        along = "zyx".index(axis)
        moved = np.moveaxis(volume, along, 0)  # slices of this axis first
        out = np.zeros(moved.shape, bool)
        for start in range(0, moved.shape[0], batch):
            chunk = [np.ascontiguousarray(s) for s in moved[start : start + batch]]
            for k, found in enumerate(predict(net, chunk)):
                out[start + k] = particle_mask(found, chunk[k].shape, classes)
                if on_slice is not None:
                    on_slice(axis, start + k)
        masks.append(np.moveaxis(out, 0, along))
    return masks


def unflip(found: Detections, axis: int, side: int) -> Detections:
    """Detections on a slice flipped along ``axis`` (0 rows, 1 columns) mapped back."""
    boxes = found.boxes.copy()
    lo, hi = (1, 3) if axis == 0 else (0, 2)
    boxes[:, lo], boxes[:, hi] = side - found.boxes[:, hi], side - found.boxes[:, lo]
    return Detections(np.flip(found.masks, axis + 1), found.scores, found.classes, boxes)


def uncertainty(net: MaskRCNN, images: Sequence[np.ndarray]) -> list[InstanceUncertainty]:
    """Instance uncertainty of each (H, W) uint8 slice: detection scores and disagreement
    with the vertically and horizontally flipped slice (Daemi et al. 2022, §4, flip for training;
    using the flips at test time is tomoloop's).
    """
    plain = predict(net, images)
    flips = [
        [unflip(f, axis, image.shape[axis]) for f, image in zip(found, images, strict=True)]
        for axis, found in (
            (axis, predict(net, [np.ascontiguousarray(np.flip(i, axis)) for i in images]))
            for axis in (0, 1)
        )
    ]
    return [instance_uncertainty(p, [flips[0][k], flips[1][k]]) for k, p in enumerate(plain)]
