"""The numba kernels against the OpenCV/numpy chains that produce the same output, in one run.

resize: ``resize_rgb`` (area resize + BGR->RGB, one pass) against
``cv2.cvtColor(cv2.resize(f, (227, 227), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)``, per frame
and per chunk of 64 frames, for the recorder's 454x454 and for 1280x720 sources.
augment: ``augment_images`` (flip, brightness, noise, shift fused) on 64 images of 227x227 with every
transform applied, against the numpy chain for the same kind of output (``[:, ::-1]``, multiply by
a uniform factor and ``np.clip``, ``np.random.normal`` and ``np.clip``, ``np.roll`` with zeroing).
Every kernel is called once first (compile or cache load, reported separately); then the median of
``--repeat`` timings counts. OpenCV and numba use both cores, as they come.

    python benchmarks/bench_kernels.py [--repeat 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jumpnet_stream.kernels import augment_images, resize_rgb  # noqa: E402
from jumpnet_stream.synth import Scene  # noqa: E402

SIZE = (227, 227)


def frames_of(height: int, width: int, n: int) -> np.ndarray:
    """Game frames (the synthetic scene), BGR, scaled to the source size."""
    scene = Scene(227, seed=0, jumps=[(0, 30)])
    return np.stack([cv2.resize(cv2.cvtColor(scene.render(f), cv2.COLOR_RGB2BGR), (width, height),
                                interpolation=cv2.INTER_LINEAR) for f in range(n)])


def numpy_augment_chain(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The plain-numpy way to the same kind of output: every transform on every image."""
    x = images.astype(np.float32) / np.float32(255)
    x = x[:, :, ::-1]
    x = np.clip(x * rng.uniform(0.7, 1.3, (len(x), 1, 1, 1)).astype(np.float32), 0, 1)
    x = np.clip(x + rng.normal(0, 0.02, x.shape).astype(np.float32), 0, 1)
    x = np.roll(x, 3, axis=2)
    x[:, :, :3] = 0
    return np.floor(x * 255 + 0.5).astype(np.uint8)


def median_seconds(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = np.empty((64, *SIZE, 3), np.uint8)
    results, first_call = {}, {}
    for label, (h, w) in (("454x454", (454, 454)), ("1280x720", (720, 1280))):
        frames = frames_of(h, w, 64)
        start = time.perf_counter()
        resize_rgb(frames[0], SIZE, out=out[0])
        first_call[label] = time.perf_counter() - start
        np.testing.assert_array_less(np.abs(resize_rgb(frames[1], SIZE).astype(int) - cv2.cvtColor(
            cv2.resize(frames[1], SIZE[::-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)), 2)

        def ours_frame() -> None:
            resize_rgb(frames[0], SIZE, out=out[0])

        def cv2_frame() -> None:
            cv2.cvtColor(cv2.resize(frames[0], SIZE[::-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)

        def ours_chunk() -> None:
            for i in range(64):
                resize_rgb(frames[i], SIZE, out=out[i])

        def cv2_chunk() -> None:
            for i in range(64):
                cv2.cvtColor(cv2.resize(frames[i], SIZE[::-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB,
                             dst=out[i])

        for unit, ours, theirs, repeat in (("frame", ours_frame, cv2_frame, args.repeat * 20),
                                           ("chunk of 64", ours_chunk, cv2_chunk, args.repeat)):
            ours_s = statistics.median(median_seconds(ours, repeat) for _ in range(3))
            theirs_s = statistics.median(median_seconds(theirs, repeat) for _ in range(3))
            results[(label, unit)] = (ours_s, theirs_s)

    images = frames_of(227, 227, 64)[..., ::-1].copy()
    start = time.perf_counter()
    augment_images(images, np.arange(64), 1, 0)
    first_call["augment"] = time.perf_counter() - start
    everything = dict(p_flip=1.0, p_brightness=1.0, p_noise=1.0, p_shift=1.0)
    rng = np.random.default_rng(0)
    augment_ours = statistics.median(median_seconds(lambda: augment_images(images, np.arange(64), 1, 0, **everything),
                                                    args.repeat) for _ in range(3))
    augment_numpy = statistics.median(median_seconds(lambda: numpy_augment_chain(images, rng), args.repeat)
                                      for _ in range(3))

    print(f"{'resize to 227x227 RGB':<24} {'unit':<12} {'ours us':>9} {'cv2 AREA+cvtColor us':>21} {'speed-up':>9}")
    for (label, unit), (ours_s, theirs_s) in results.items():
        print(f"{label:<24} {unit:<12} {ours_s * 1e6:>9.1f} {theirs_s * 1e6:>21.1f} {theirs_s / ours_s:>9.2f}")
    print(f"\n{'augment, all four transforms':<37} {'ours ms':>9} {'numpy chain ms':>15} {'speed-up':>9}")
    print(f"{'64 images of 227x227':<37} {augment_ours * 1e3:>9.2f} {augment_numpy * 1e3:>15.2f} "
          f"{augment_numpy / augment_ours:>9.2f}")
    print("first call (compile or cache load): " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in first_call.items()))
    if args.json:
        frame_ours, frame_cv2 = results[("454x454", "frame")]
        print(json.dumps({
            "resize_speedup_vs_cv2": round(frame_cv2 / frame_ours, 2),
            "augment_speedup_vs_numpy": round(augment_numpy / augment_ours, 2),
            "resize_us": round(frame_ours * 1e6, 1), "resize_cv2_us": round(frame_cv2 * 1e6, 1),
            "augment_chunk_ms": round(augment_ours * 1e3, 2), "augment_numpy_chunk_ms": round(augment_numpy * 1e3, 2),
            "cases": {f"{label} {unit}": {"ours_us": round(o * 1e6, 1), "cv2_us": round(t * 1e6, 1),
                                          "speedup": round(t / o, 2)} for (label, unit), (o, t) in results.items()},
            "first_call_ms": {k: round(v * 1e3) for k, v in first_call.items()},
        }))


if __name__ == "__main__":
    main()
