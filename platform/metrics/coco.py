"""COCO evaluation helpers (pycocotools; AP on the 0–1 scale)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def self_consistency_ap(coco_file: Path, iou_type: str = "segm") -> float:
    """AP of a COCO file's ground truth scored against itself (1.0 for a sound export).

    Every annotation becomes a detection with score 1. Returns NaN for a file without
    annotations (pycocotools cannot score an empty result set).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_file))
        anns = json.loads(Path(coco_file).read_text())["annotations"]
        if not anns:
            return float("nan")
        dt = gt.loadRes([{**a, "score": 1.0} for a in anns])
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.params.maxDets = [1, 10, max(100, len(anns))]
        evaluator.evaluate()
        evaluator.accumulate()
    return mean_ap(evaluator.eval["precision"])


def mean_ap(precision: np.ndarray) -> float:
    """AP@[.50:.95], all areas, at the largest maxDets, from COCOeval's precision array.

    ``precision`` is (iou thresholds, recall points, categories, area ranges, maxDets);
    -1 marks cells without ground truth. (``COCOeval.summarize`` reads maxDets=100 only.)
    """
    cells = precision[:, :, :, 0, -1]
    valid = cells[cells > -1]
    return float(valid.mean()) if valid.size else float("nan")


def instance_scores(ground_truth: dict, results: list[dict]) -> dict[str, float]:
    """COCO AP of detections against a ground-truth document, 0–1 scale.

    Returns ``segm_AP``, ``segm_AP50``, ``segm_AP75`` and the same for ``bbox``: AP over
    IoU .50:.95 and at IoU .50 and .75, all areas, at the largest maxDets. No detections
    score 0. ``results`` are COCO result dicts (:func:`tomoloop.particles.detection_results`).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        scores = {}
        for iou_type in ("segm", "bbox"):
            if not results:
                scores.update({f"{iou_type}_{k}": 0.0 for k in ("AP", "AP50", "AP75")})
                continue
            evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
            evaluator.params.maxDets = [1, 10, max(100, len(results))]
            evaluator.evaluate()
            evaluator.accumulate()
            precision = evaluator.eval["precision"]
            scores[f"{iou_type}_AP"] = mean_ap(precision)
            scores[f"{iou_type}_AP50"] = mean_ap(precision[:1])  # thresholds .50, .55, …
            scores[f"{iou_type}_AP75"] = mean_ap(precision[5:6])
    return scores
