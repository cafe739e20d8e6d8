"""Peak RSS of ``jumpnet-stream preprocess`` against keylog length, beside plain ``np.load``.

Writes synthetic recorder keylogs (no video) of several lengths, then in fresh processes measures
the peak resident memory of our preprocess and of ``np.load(...)["data"]`` (the seed's way, on our
own trusted files) on each. Prints a table; ``--json`` adds one JSON object as the last line.

    python benchmarks/bench_preprocess_memory.py --minutes 1,2,5,10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jumpnet_stream.synth import make_recording  # noqa: E402
from tools.measure import run_peak_rss  # noqa: E402

NP_LOAD = "import numpy as np, sys; d = np.load(sys.argv[1], allow_pickle=True)['data']; print(len(d))"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,2,5,10", help="comma-separated keylog lengths in minutes")
    parser.add_argument("--keys", default="w,a", help="tracked keys of the synthetic recordings")
    parser.add_argument("--workdir", default=None, help="where to write the keylogs (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for minutes in [float(m) for m in args.minutes.split(",")]:
            rec = make_recording(work, name="keylog", seconds=60 * minutes, keys=tuple(args.keys.split(",")),
                                 seed=11, video=False)
            size = os.path.getsize(rec.npz) / 1e6
            out = os.path.join(work, "positives.zarr")
            start = time.perf_counter()
            code, ours, _, err = run_peak_rss([sys.executable, "-m", "jumpnet_stream", "preprocess", rec.npz,
                                               "-o", out, "--overwrite", "--quiet", "--json"])
            seconds = time.perf_counter() - start
            if code:
                sys.exit(err)
            code, theirs, _, err = run_peak_rss([sys.executable, "-c", NP_LOAD, rec.npz])
            if code:
                sys.exit(err)
            rows.append({"minutes": minutes, "events": rec.events, "keylog_mb": round(size),
                         "preprocess_peak_mb": round(ours), "preprocess_s": round(seconds, 1),
                         "np_load_peak_mb": round(theirs), "ratio": round(theirs / ours, 1)})
            os.remove(rec.npz)
    print(f"{'minutes':>7} {'events':>7} {'keylog MB':>10} {'preprocess peak MB':>19} {'time s':>7} "
          f"{'np.load peak MB':>16} {'np.load / ours':>15}")
    for r in rows:
        print(f"{r['minutes']:>7g} {r['events']:>7} {r['keylog_mb']:>10} {r['preprocess_peak_mb']:>19} "
              f"{r['preprocess_s']:>7} {r['np_load_peak_mb']:>16} {r['ratio']:>15}")
    if args.json:
        print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
