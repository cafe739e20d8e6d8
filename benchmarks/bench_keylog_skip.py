"""Preprocess of a stored keylog with its images left in the file (read only for the jumps) against reading
every event's image, side by side in fresh processes.

Writes a synthetic recorder keylog (stored, as ``np.savez`` writes one; 10 minutes by default, about 2 GB),
then runs, each in a fresh process and ``--runs`` times (medians reported):

* ``pairing``: the keylog's events paired into positives (``pair_jumps``), ``full`` from
  ``Recording.events()`` (every image read and converted) and ``lazy`` from
  ``Recording.events(lazy_images=True)`` with only the positives' images read (``Recording.with_images``);
* ``preprocess``: the whole stage into a .zarr store as ``stages/preprocess.py`` runs it (``lazy``), and
  with the images forced to be read (``full``: ``Recording.skips_images`` made False).

Each row gives wall and CPU seconds, the bytes read through system calls (``rchar``) and from the disk
(``read_bytes``, from ``/proc/self/io``), peak RSS, and a digest of what was written: full and lazy must
agree. ``--cold`` drops the keylog from the page cache before every run (``posix_fadvise(DONTNEED)``).

    python benchmarks/bench_keylog_skip.py [--minutes 10] [--keys w,a] [--runs 3] [--cold] [--keylog K.npz]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# One run, in a fresh process: argv = what, mode, keylog, output, key, cold.
CHILD = r"""
import hashlib, json, os, resource, sys, time
what, mode, keylog, output, key, cold = sys.argv[1:7]
if cold == "1":
    fd = os.open(keylog, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
from collections import Counter
import numpy as np
from jumpnet_stream import open_dataset, preprocess
from jumpnet_stream.recording import Recording
from jumpnet_stream.stages.preprocess import pair_jumps

def io():
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["rchar"]), int(fields["read_bytes"])

digest = hashlib.sha256()
if mode == "full":
    Recording.skips_images = property(lambda self: False)
before, wall, cpu = io(), time.perf_counter(), time.process_time()
if what == "pairing":
    recording = Recording(keylog)
    lazy = mode == "lazy"
    chunks = pair_jumps(recording.events(lazy_images=lazy), key_index=recording.keys.index(key),
                        source=recording.name, counts=Counter())
    for chunk in recording.with_images(chunks) if lazy else chunks:
        for name in chunk.fields:
            digest.update(np.ascontiguousarray(chunk[name]).tobytes())
else:
    preprocess(keylog, output, key=key, overwrite=True)
wall, cpu, after = time.perf_counter() - wall, time.process_time() - cpu, io()
if what == "preprocess":
    dataset = open_dataset(output)
    for chunk in dataset.chunks():
        for name in chunk.fields:
            digest.update(np.ascontiguousarray(chunk[name]).tobytes())
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rchar_mb": (after[0] - before[0]) / 1e6,
                  "disk_mb": (after[1] - before[1]) / 1e6,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "digest": digest.hexdigest()[:16]}))
"""


def run(what: str, mode: str, keylog: str, output: str, key: str, cold: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, what, mode, keylog, output, key, "1" if cold else "0"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    if proc.returncode:
        sys.exit(f"{what} {mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_row(runs: list[dict]) -> dict:
    row = {name: round(statistics.median(r[name] for r in runs), 2) for name in runs[0] if name != "digest"}
    digests = {r["digest"] for r in runs}
    row["digest"] = digests.pop() if len(digests) == 1 else "differs between runs"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the synthetic keylog (default: 10)")
    parser.add_argument("--keys", default="w,a", help="tracked keys; the first one jumps (default: w,a)")
    parser.add_argument("--keylog", default=None, help="measure this keylog instead of writing one")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per row; medians (default: 3)")
    parser.add_argument("--cold", action="store_true", help="drop the keylog from the page cache before each run")
    parser.add_argument("--workdir", default=None, help="where to write the keylog (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        key = args.keys.split(",")[0]
        keylog = args.keylog
        if keylog is None:
            from jumpnet_stream.synth import make_recording

            keylog = make_recording(work, name="keylog", seconds=60 * args.minutes, keys=tuple(args.keys.split(",")),
                                    seed=11, video=False).npz
        output = os.path.join(work, "positives.zarr")
        rows = []
        for what in ("pairing", "preprocess"):
            for mode in ("full", "lazy"):
                runs = [run(what, mode, keylog, output, key, args.cold) for _ in range(args.runs)]
                rows.append({"what": what, "mode": mode, **median_row(runs)})
        size = os.path.getsize(keylog) / 1e6
    print(f"keylog {size:.0f} MB, {'cold' if args.cold else 'warm'} page cache, medians of {args.runs} fresh processes")
    print(f"{'':<11} {'mode':<5} {'wall s':>7} {'cpu s':>6} {'rchar MB':>9} {'disk MB':>8} {'peak MB':>8}  digest")
    for r in rows:
        print(f"{r['what']:<11} {r['mode']:<5} {r['wall_s']:>7} {r['cpu_s']:>6} {r['rchar_mb']:>9} {r['disk_mb']:>8} "
              f"{r['peak_mb']:>8}  {r['digest']}")
    for what in ("pairing", "preprocess"):
        full, lazy = (r for r in rows if r["what"] == what)
        same = "the same" if full["digest"] == lazy["digest"] else "DIFFERENT"
        print(f"{what}: lazy {full['wall_s'] / max(lazy['wall_s'], 1e-9):.1f}x faster, reads "
              f"{full['rchar_mb'] / max(lazy['rchar_mb'], 1e-9):.0f}x fewer bytes; output {same}")
    preprocess_full, preprocess_lazy = rows[2:]
    if preprocess_lazy["rchar_mb"] > 0.5 * preprocess_full["rchar_mb"]:
        print("note: preprocess read every image either way: stages/preprocess.py does not use lazy_images")
    if args.json:
        print(json.dumps({"keylog_mb": round(size), "cold": args.cold, "rows": rows}))


if __name__ == "__main__":
    main()
