"""Peak RSS and time of ``jumpnet-stream build`` on keylogs of many tiny events, beside preprocess alone and
``np.load``, all from the same run.

A keylog of N events with 1x1 captures spread over a 10 s video (``synth.write_event_flood``: every
``--jump-every``-th press/release pair the jump key's, the others another key's; 1, the default, makes
every pair a jump: N/2 positives, 3N/2 samples after augmentation). Each event is pickled on its own (no
memo: every global spelled out), the heaviest kind of keylog to read per event. Then, each in a fresh
process: ``build`` (all stages), ``preprocess`` alone (the keylog's reading and pairing: the reference the
build's own work is compared with) and ``np.load(..., allow_pickle=True)["data"]`` (numpy's C unpickler on
our own trusted file: what reading an event costs without any check). The build's peak should not grow
with N; its time is linear in it. ``--json`` adds one JSON object as the last line.

    python benchmarks/bench_events.py --events 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jumpnet_stream.synth import make_recording, write_event_flood  # noqa: E402
from tools.measure import run_measured  # noqa: E402

NP_LOAD = "import numpy as np, sys; d = np.load(sys.argv[1], allow_pickle=True)['data']; print(len(d))"


def measured(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS MB, wall seconds) of ``cmd`` in a fresh process; exits with its stderr if it fails."""
    start = time.perf_counter()
    result = run_measured(cmd)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(map(str, cmd[:4]))} failed: {result.stderr}")
    return result.peak_mb, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default="10000,100000", help="comma-separated event counts")
    parser.add_argument("--jump-every", type=int, default=1, help="one press/release pair in this many is a jump")
    parser.add_argument("--workdir", default=None, help="where to write the keylogs (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "jumpnet_stream"]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        clip = make_recording(work, name="clip", seconds=10, keys=("w", "a"), seed=3)
        for events in [int(n) for n in args.events.split(",")]:
            keylog = write_event_flood(os.path.join(work, "flood.npz"), events, frames=clip.frames,
                                       jump_every=args.jump_every)
            out = os.path.join(work, "set")
            build_mb, build_s = measured([*cli, "build", "--recording", keylog, "--video", clip.video, "-o", out,
                                          "--quiet", "--json"])
            with open(os.path.join(out, "manifest.json")) as f:
                samples = json.load(f)["outputs"]["dataset.zarr"]["samples"]
            shutil.rmtree(out)
            pre_mb, pre_s = measured([*cli, "preprocess", keylog, "-o", os.path.join(work, "positives.zarr"),
                                      "--overwrite", "--quiet", "--json"])
            load_mb, load_s = measured([sys.executable, "-c", NP_LOAD, keylog])
            rows.append({"events": events, "keylog_mb": round(os.path.getsize(keylog) / 1e6), "samples": samples,
                         "build_peak_mb": round(build_mb), "build_s": round(build_s, 1),
                         "build_us_per_event": round(build_s / events * 1e6),
                         "preprocess_peak_mb": round(pre_mb), "preprocess_s": round(pre_s, 1),
                         "np_load_peak_mb": round(load_mb), "np_load_s": round(load_s, 1),
                         "build_over_preprocess_s": round(build_s / pre_s, 1),
                         "preprocess_over_np_load_s": round(pre_s / load_s, 1)})
            os.remove(keylog)
    header = ["events", "keylog MB", "samples", "build peak MB", "build s", "us/event", "preprocess peak MB",
              "preprocess s", "np.load peak MB", "np.load s", "build/preprocess s", "preprocess/np.load s"]
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(str(v) for v in r.values()))
    if args.json:
        print(json.dumps({"jump_every": args.jump_every, "rows": rows}))


if __name__ == "__main__":
    main()
