"""The seed's preprocess, re-done plainly over ``np.load``: the oracle for our stage, with both rules for what
ends a jump (the seed's: the next release of any key; the default: the release that lets go of the jump key).

Only for files the tests generated themselves (``allow_pickle=True`` is never used on user files).
"""

from __future__ import annotations

import numpy as np


def _scalar(v):
    while True:
        if isinstance(v, np.ndarray) and v.size == 1:
            v = v.reshape(()).item() if v.dtype == object else v.reshape(())[()]
        elif isinstance(v, (list, tuple)) and len(v) == 1:
            v = v[0]
        else:
            return v


def _vector(v):
    if isinstance(v, np.ndarray) and v.dtype == object and v.ndim == 0:
        v = v.item()
    return np.array([float(_scalar(x)) for x in np.ravel(np.array(v, dtype=object))], np.float32)


def _phase(p):
    p = _scalar(p)
    return (p.decode() if isinstance(p, bytes) else str(p)).strip().lower()


def load_keys(path):
    with np.load(path, allow_pickle=True) as z:
        return [k.decode() if isinstance(k, bytes) else str(k) for k in np.ravel(z["keys"])]


def seed_preprocess(path, key, pairing="jump-key"):
    """(positives, counts): positives as (image float, keys_raw, hold, frame_idx) tuples."""
    keys = load_keys(path)
    t = keys.index(key)
    with np.load(path, allow_pickle=True) as z:
        data = z["data"]
    counts = dict(total=len(data), press_seen=0, release_seen=0, paired=0, unmatched_final_press=0, malformed=0,
                  other_key_release_while_pending=0)
    positives, pending = [], None
    for entry in data:
        try:
            entry = list(entry)
            assert len(entry) == 6
            image, _prev, multi_hot, holds, phase, frame = entry
            image = image if isinstance(image, np.ndarray) else _scalar(image)
            assert isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
            multi_hot, holds, phase = _vector(multi_hot), _vector(holds), _phase(phase)
            assert len(multi_hot) == len(keys) == len(holds) and phase in ("press", "release")
            frame = int(_scalar(frame))
        except AssertionError:
            counts["malformed"] += 1
            continue
        if phase == "press":
            counts["press_seen"] += 1
            if pending is None and multi_hot[t] > 0.5:
                pending = (image, multi_hot, frame)
        else:
            counts["release_seen"] += 1
            if pending is not None and pairing == "jump-key" and multi_hot[t] > 0.5:
                counts["other_key_release_while_pending"] += 1
            elif pending is not None:
                hold = np.zeros(len(keys), np.float32)
                hold[t] = holds[t]
                positives.append((pending[0], pending[1], hold, pending[2]))
                counts["paired"] += 1
                pending = None
    if pending is not None:
        hold = np.zeros(len(keys), np.float32)
        hold[t] = np.nan
        positives.append((pending[0], pending[1], hold, pending[2]))
        counts["unmatched_final_press"] += 1
    return positives, counts
