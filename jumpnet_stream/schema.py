"""The sample schema, declared once: every field of a dataset sample, its dtype, its shape per sample, and
the value a dataset written before the field existed holds. Formats, stages and chunks derive from it, so
adding a field is one line here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chunk import Chunk


@dataclass(frozen=True)
class Field:
    """One field of a sample. ``shape``: "image" (H, W, 3), "keys" (K,: one value per key) or "" (a
    scalar). ``kinds``: the numpy kinds a stored column of it may have (floats, integers, text)."""

    name: str
    dtype: str
    shape: str = ""
    default: object = 0
    kinds: str = "f"

    @property
    def text(self) -> bool:
        return self.dtype == "str"

    def numpy_dtype(self) -> np.dtype:
        return np.dtype("<U1") if self.text else np.dtype(self.dtype)

    def per_sample(self, keys: int, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(image_shape) if self.shape == "image" else (keys,) if self.shape == "keys" else ()

    def filled(self, n: int, keys: int) -> np.ndarray:
        """The column of ``n`` samples of a dataset that predates this field."""
        shape = (n, keys) if self.shape == "keys" else (n,)
        return np.full(shape, self.default, dtype=None if self.text else self.dtype)  # text: as wide as it is


SCHEMA = (
    Field("image", "uint8", "image", None, "u"),
    Field("label", "float32"),                        # 1.0 jump, 0.0 no jump
    Field("keys_raw", "float32", "keys"),             # multi-hot of the keys held at the press
    Field("hold_duration", "float32", "keys"),        # the jump key's hold (seconds) in its slot; NaN: never released
    Field("phase", "str", default="press", kinds="UOST"),
    Field("frame_index", "int64", kinds="iu"),        # the video frame (frames written before the press)
    Field("source", "str", default="", kinds="UOST"),  # the recording the sample comes from
    Field("release_index", "int64", default=-1, kinds="iu"),  # a positive's release frame (-1: none, or unknown)
    Field("split", "str", default="train", kinds="UOST"),     # "train" or "val"
    Field("weight", "float32", default=1.0),                   # the sample's class weight (inverse frequency)
    Field("augmented", "bool", default=False, kinds="b"),      # an augmented copy, not an original
    Field("copy", "int32", default=0, kinds="iu"),             # which copy (0: the original)
)
FIELDS = tuple(field.name for field in SCHEMA)
BY_NAME = {field.name: field for field in SCHEMA}
SMALL_FIELDS = FIELDS[1:]  # every field but the image: a few bytes per sample
DTYPES = {field.name: (str if field.text else np.dtype(field.dtype)) for field in SCHEMA}


def empty(keys: int, image_shape: tuple[int, ...]) -> Chunk:
    """A chunk of no samples with every field's dtype and shape: what an empty dataset holds."""
    return Chunk({f.name: np.zeros((0, *f.per_sample(keys, image_shape)), f.numpy_dtype()) for f in SCHEMA})


def complete(columns: dict[str, np.ndarray], keys: int) -> Chunk:
    """``columns`` with every schema field, in schema order: a field the dataset predates gets its default."""
    n = len(next(iter(columns.values())))
    return Chunk({f.name: columns[f.name] if f.name in columns else f.filled(n, keys) for f in SCHEMA})
