"""Is a set good to train on? The shortcut audit: how well trivial image statistics tell the positives from
the negatives, as a ROC AUC each. A statistic that separates them (AUC far from 0.5) is a shortcut a model
can learn instead of the game: "blurry means no jump" when positives are clean captures and negatives are
frames decoded from the video, or the recorder's key label on the press frames.

AUCs are over original samples (augmented copies left out), at most ``limit`` of each class chosen with a
seed, and reported as separability: max(AUC, 1 - AUC), so 0.5 is "no better than chance" either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import cv2
import numpy as np

from .formats import DatasetReader
from .recorder import label_rows
from .sampling import choose

WARN_AUC = 0.8     # a statistic above this is named in a warning
TARGET_AUC = 0.65  # what a set made the default way stays below, every statistic
STATISTICS = ("sharpness", "brightness", "label_region")


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image of (n, H, W, 3) uint8 RGB: sharpness (mean |Laplacian| of the grey image), brightness (its
    mean) and the label region's greenness (green over the other channels in the strip the recorder's labels
    occupy)."""
    out = {name: np.empty(len(images), np.float64) for name in STATISTICS}
    rows = label_rows(images.shape[1])
    for i, image in enumerate(images):
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        out["sharpness"][i] = np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean()
        out["brightness"][i] = grey.mean()
        strip = image[:rows].astype(np.int16)
        out["label_region"][i] = np.clip(strip[..., 1] - np.maximum(strip[..., 0], strip[..., 2]), 0, None).mean()
    return out


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """The probability that a random positive scores above a random negative (ties count half): the
    Mann-Whitney U statistic over the product of the class sizes. None without both classes."""
    if not len(positive) or not len(negative):
        return None
    scores = np.concatenate([positive, negative])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    starts = np.flatnonzero(np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]]))
    ends = np.concatenate([starts[1:], [len(scores)]])
    for lo, hi in zip(starts, ends):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2
    u = ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


@dataclass
class AuditReport:
    """Separability (max(AUC, 1 - AUC)) per statistic, the samples it is over, and the warnings it raises."""

    auc: dict[str, float | None] = field(default_factory=dict)
    positives: int = 0
    negatives: int = 0
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        shown = ", ".join(f"{name} {_auc(value)}" for name, value in self.auc.items())
        return [f"shortcut audit (ROC AUC; 0.5 is chance): {shown}  ({self.positives} positives, "
                f"{self.negatives} negatives)"] + [f"warning: {w}" for w in self.warnings]


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _originals(dataset: DatasetReader, classes: tuple[float, ...]) -> Iterator[dict[float, np.ndarray]]:
    """Per block of rows, the positions of the original (not augmented) samples of each class."""
    for start, block in dataset.column_blocks(["label", "augmented"]):
        originals = ~block["augmented"]
        yield {label: start + np.flatnonzero(originals & (block["label"] == label)) for label in classes}


def audit(dataset: DatasetReader, *, limit: int = 2000, seed: int = 0) -> AuditReport:
    """The shortcut audit of a dataset (see the module's docstring); reads only the samples it measures."""
    classes = (1.0, 0.0)
    # two passes over the small fields (counts, then the chosen); kept from one where they lie among the images
    kept = None if dataset.cheap_columns else list(_originals(dataset, classes))
    sizes = dict.fromkeys(classes, 0)
    for members in kept or _originals(dataset, classes):
        for label in classes:
            sizes[label] += len(members[label])
    chosen = {label: choose(sizes[label], limit, seed) for label in classes}  # ordinals among the class's
    picked, before = [], dict.fromkeys(classes, 0)
    for members in kept or _originals(dataset, classes):
        for label in classes:
            lo, hi = np.searchsorted(chosen[label], [before[label], before[label] + len(members[label])])
            picked.append(members[label][chosen[label][lo:hi] - before[label]])
            before[label] += len(members[label])
    report = AuditReport()
    report.positives, report.negatives = (len(chosen[label]) for label in classes)
    positions = np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
    values = {name: [] for name in STATISTICS}
    labels = []
    for chunk in dataset.take(positions):
        for name, column in image_statistics(chunk["image"]).items():
            values[name].append(column)
        labels.append(chunk["label"])
    label = np.concatenate(labels) if labels else np.zeros(0)
    for name in STATISTICS:
        column = np.concatenate(values[name]) if values[name] else np.zeros(0)
        auc = roc_auc(column[label == 1], column[label == 0])
        report.auc[name] = None if auc is None else round(max(auc, 1 - auc), 4)
        if auc is not None and report.auc[name] > WARN_AUC:
            report.warnings.append(f"{name} alone tells positives from negatives (AUC {report.auc[name]:.2f}): a "
                                   "model can learn that instead of the game")
    return report
