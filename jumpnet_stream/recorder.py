"""What the recorder draws on its video: a green ``"<key>↓"`` for every held key, at ``(5 + 50 * i, 20)`` on
the 227x227 capture (``cv2.putText``, scale 0.6, thickness 2), before scaling it up. The label tells the
classes apart (it is drawn while the jump key is held: on a press's frame, never on a kept negative's), so
images taken from the video are masked there: the strip at the top that holds every label."""

from __future__ import annotations

import math

import numpy as np

CAPTURE = 227           # the recorder's capture size: its labels are drawn at this scale
LABEL_STRIP = 26        # rows from the top that hold every label (text 20 px high at y=20, 2 px strokes)
MASK_VALUE = 0          # what the strip is filled with, in every image of both classes


def label_rows(height: int) -> int:
    """Rows from the top of an image ``height`` tall (a capture resized) that may hold a label."""
    return math.ceil(LABEL_STRIP * height / CAPTURE)


def mask_labels(images: np.ndarray) -> np.ndarray:
    """Fill the label strip of (n, H, W, 3) or (H, W, 3) images, in place; returns them."""
    rows = label_rows(images.shape[-3])
    images[..., :rows, :, :] = MASK_VALUE
    return images
