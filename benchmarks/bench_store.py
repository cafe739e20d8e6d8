"""Codecs for the store's image array, measured on game frames: write speed and compression ratio.

Two frame sources: clean 227x227 captures (what positives hold) and frames decoded from the mp4v
preview video and resized to 227x227 (what negatives hold). Writes the same frames with each
candidate codec through zarr (our chunking and settings) and prints MB/s of raw image data written
and the compression ratio, beside an uncompressed write in the same run.

    python benchmarks/bench_store.py [--frames 512]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import cv2
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jumpnet_stream.formats import disk_size  # noqa: E402
from jumpnet_stream.formats.zarr_store import _ARRAY_CONFIG, _KEY_ENCODING, IMAGE_ROWS  # noqa: E402
from jumpnet_stream.synth import Scene, make_recording  # noqa: E402

CODECS = {"none": None, "zstd-1": ZstdCodec(level=1), "zstd-3": ZstdCodec(level=3),
          "blosc-lz4": BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")}


def captures(n: int, work: str) -> np.ndarray:
    scene = Scene(227, seed=0, jumps=[(i, 20) for i in range(0, n, 40)])
    return np.stack([scene.render(f) for f in range(n)])


def decoded(n: int, work: str) -> np.ndarray:
    rec = make_recording(work, name="video", seconds=n / 30 + 1, seed=0)
    cap = cv2.VideoCapture(rec.video)
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        small = cv2.resize(frame, (227, 227), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def measure(frames: np.ndarray, work: str) -> dict[str, dict[str, float]]:
    """Best-of-3 write speed and the ratio of each codec on these frames."""
    raw_mb = frames.nbytes / 1e6
    results = {}
    for name, codec in CODECS.items():
        best = float("inf")
        path = os.path.join(work, f"{name}.zarr")
        for _ in range(3):
            shutil.rmtree(path, ignore_errors=True)
            start = time.perf_counter()
            array = zarr.create_array(path, shape=frames.shape, dtype=np.uint8,
                                      chunks=(IMAGE_ROWS, *frames.shape[1:]), compressors=codec,
                                      config=_ARRAY_CONFIG, chunk_key_encoding=_KEY_ENCODING)
            for i in range(0, len(frames), IMAGE_ROWS):
                array[i:i + IMAGE_ROWS] = frames[i:i + IMAGE_ROWS]
            best = min(best, time.perf_counter() - start)
        results[name] = {"mb_per_s": round(raw_mb / best), "ratio": round(frames.nbytes / disk_size(path), 2)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = {}
    with tempfile.TemporaryDirectory() as work:
        for source, frames_of in (("captures", captures), ("decoded video", decoded)):
            table[source] = measure(frames_of(args.frames, work), work)
    print(f"{'frames':<14} {'codec':<10} {'write MB/s':>10} {'ratio':>6} {'speed vs none':>14}")
    for source, results in table.items():
        for name, r in results.items():
            print(f"{source:<14} {name:<10} {r['mb_per_s']:>10} {r['ratio']:>6} "
                  f"{r['mb_per_s'] / results['none']['mb_per_s']:>14.2f}")
    if args.json:
        print(json.dumps(table))


if __name__ == "__main__":
    main()
