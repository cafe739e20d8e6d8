"""One field of a recorder entry normalised: numbers, key vectors, phases and images, wrapped in 0-d object
arrays or 1-element lists or not, each checked; what cannot be normalised raises :class:`Malformed`, whose
message is the reason the entry is counted under. The keylog reader and the legacy ``.npz`` reader share them.
"""

from __future__ import annotations

import numpy as np

from .image_refs import ImageRef

PHASES = ("press", "release")


class Malformed(ValueError):
    """An entry that cannot be normalised; the message is the reason it is counted under."""


def unwrap(value: object) -> object:
    """Strip 0-d object arrays and 1-element lists/tuples around a scalar value."""
    for _ in range(8):
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item() if value.dtype.hasobject else value[()]
        elif isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        elif isinstance(value, np.ndarray) and value.size == 1 and value.dtype.hasobject:
            value = value.reshape(()).item()
        else:
            return value
    return value


_NUMBER = (int, float, np.integer, np.floating)
# Not numbers although isinstance says so: numpy's timedelta64 is a signedinteger (and float() of one
# with a unit is a datetime.timedelta, a TypeError); datetime64 for symmetry; bools are flags.
_NOT_NUMBER = (bool, np.bool_, np.timedelta64, np.datetime64)
MAX_INDEX = 2 ** 62  # frame indices beyond this are garbage (an hour at 30 fps is 108,000 frames)


def is_number(value: object) -> bool:
    """A real number (int or float, Python's or numpy's), and not a time, a date or a bool."""
    return isinstance(value, _NUMBER) and not isinstance(value, _NOT_NUMBER)


def _number(value: object, what: str) -> int | float | np.number:
    value = unwrap(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
        value = value.reshape(())[()]
    if not is_number(value):
        raise Malformed(f"{what} is not a number")
    return value


def as_float(value: object, what: str) -> float:
    """A finite float from a number, wrapped or not (NaN and infinities are malformed)."""
    try:
        number = float(_number(value, what))
    except OverflowError:  # an int beyond float's range
        raise Malformed(f"{what} is NaN or infinite") from None
    if not np.isfinite(number):
        raise Malformed(f"{what} is NaN or infinite")
    return number


def as_int(value: object, what: str) -> int:
    """A non-negative integer from an int, or a float with an integral value (NaN is malformed)."""
    number = _number(value, what)
    if isinstance(number, (float, np.floating)):
        if not np.isfinite(number):
            raise Malformed(f"{what} is NaN or infinite")
        if number != int(number):
            raise Malformed(f"{what} is not an integer")
    number = int(number)
    if number < 0:
        raise Malformed(f"{what} is negative")
    if number > MAX_INDEX:
        raise Malformed(f"{what} is implausibly large")
    return number


def as_vector(value: object, length: int, what: str) -> np.ndarray:
    """A float32 vector of ``length`` from an array, list or (for length 1) scalar, wrapped or not.
    Its values must be numbers (not strings, which numpy would parse); NaN passes, for the caller to judge."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.hasobject:
        value = unwrap(value)
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        raise Malformed(f"{what} is not numeric") from None
    if raw.size != length:
        raise Malformed(f"{what} has {raw.size} values, expected {length} (one per key)")
    if raw.dtype.hasobject:  # a list of wrapped values: each must be a number (or a bool: a flag)
        items = [unwrap(item) for item in raw.reshape(-1)]
        if not all(is_number(item) or isinstance(item, (bool, np.bool_)) for item in items):
            raise Malformed(f"{what} is not numeric")
        raw = items
    elif raw.dtype.kind not in "biuf":
        raise Malformed(f"{what} is not numeric")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # out of float32's range: inf, judged by the caller
            array = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise Malformed(f"{what} is not numeric") from None
    return array.reshape(length)


def as_phase(value: object) -> str:
    value = unwrap(value)
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        raise Malformed("phase is not a string")
    phase = value.strip().lower()
    if phase not in PHASES:
        raise Malformed("phase is neither press nor release")
    return phase


def as_image(value: object) -> np.ndarray | ImageRef:
    """A validated HxWx3 image array (uint8, or float in [0, 1]), not yet converted; or the reference to one
    left in the file, whose shape and dtype the unpickler checked (its values are checked when it is read)."""
    value = unwrap(value)
    if isinstance(value, ImageRef):
        return value
    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
        raise Malformed("image is not an array")
    if value.ndim != 3 or value.shape[2] != 3 or value.shape[0] < 1 or value.shape[1] < 1:
        raise Malformed("image is not an HxWx3 array")
    if value.dtype == np.uint8:
        return value
    if value.dtype.kind != "f":
        raise Malformed("image is neither float nor uint8")
    low, high = value.min(), value.max()  # NaN propagates through both
    if not (np.isfinite(low) and np.isfinite(high)):
        raise Malformed("image has NaN or infinite values")
    if low < -1e-3 or high > 1 + 1e-3:
        raise Malformed("image values are outside [0, 1]")
    return value


def image_to_uint8(image: np.ndarray, out: np.ndarray) -> None:
    """Write a validated image into ``out`` as uint8: floats scaled by 255 and rounded to nearest."""
    if image.dtype == np.uint8:
        out[...] = image
        return
    scaled = np.multiply(image, np.float32(255), dtype=np.float32)
    np.clip(scaled, 0, 255, out=scaled)
    np.rint(scaled, out=scaled)
    out[...] = scaled
