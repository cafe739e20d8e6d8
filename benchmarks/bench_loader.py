"""Training-loop reading: a PyTorch DataLoader over dataset.zarr against the whole final.npz in RAM, one run.

Builds (once, cached in --workdir) a set from a synthetic recording, then times, each in a fresh process:

* ``in RAM``: final.npz's images as the original trainer holds them (float32, read whole), a shuffled
  permutation indexed 64 at a time into tensors: the reference;
* ``zarr, W workers``: ``DataLoader(TrainingSet(dataset.zarr), batch_size=64, sampler=ChunkShuffleSampler)``
  with W = 0 and 2 worker processes (fork), stored chunks of 64 images (the build's layout);
* ``zarr 1/chunk, random``: the same set exported with one image per stored chunk, read in a plain
  shuffled order (the other layout the issue names: any order, one image decoded per sample).

Reported per mode: samples/s over ``--epochs`` epochs after a first warm-up epoch (worker start-up and
imports excluded; the warm-up epoch's time is shown apart), the ratio to the in-RAM reference, and peak RSS
of the main process and of each worker (``VmHWM``; a forked worker's count includes the pages it shares
with the main process, so its own share is also given as ``Pss``).

    python benchmarks/bench_loader.py [--minutes 5] [--epochs 3] [--workdir bench-out] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BATCH = 64


def _memory(pid: int | str = "self") -> dict[str, float]:
    """Peak resident and proportional-share memory of a process, MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        out.update({"peak_rss_mb": int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")})
    with open(f"/proc/{pid}/smaps_rollup") as f:
        out.update({"pss_mb": int(line.split()[1]) / 1024 for line in f if line.startswith("Pss:")})
    return {k: round(v) for k, v in out.items()}


def prepare(workdir: str, minutes: float) -> str:
    """A built set (dataset.zarr, final.npz) and its one-image-per-chunk export, made once."""
    from jumpnet_stream.build import Session, build
    from jumpnet_stream.synth import make_recording

    folder = os.path.join(workdir, f"loader-{minutes:g}min")
    if not os.path.exists(os.path.join(folder, "one-per-chunk.zarr")):
        rec = make_recording(os.path.join(folder, "in"), name="play", seconds=60 * minutes, keys=("w",), seed=31)
        build([Session(rec.npz, rec.video)], os.path.join(folder, "set"))
        subprocess.run([sys.executable, "-m", "jumpnet_stream", "export", os.path.join(folder, "set", "dataset.zarr"),
                        "-o", os.path.join(folder, "one-per-chunk.zarr"), "--rechunk", "1", "--quiet"], check=True)
    return folder


def run_mode(folder: str, mode: str, epochs: int) -> dict:
    """One mode, in this (fresh) process: warm-up epoch, then ``epochs`` timed ones."""
    import numpy as np
    import torch

    from jumpnet_stream import Chunk, open_dataset
    from jumpnet_stream.training_set import ChunkShuffleSampler, TrainingSet

    torch.set_num_threads(1)
    if mode == "in RAM":
        start = time.perf_counter()
        whole = Chunk.concat(list(open_dataset(os.path.join(folder, "set", "final.npz")).chunks()))
        images = whole["image"].astype(np.float32) / 255  # as the trainer holds them: float32 in [0, 1]
        labels = whole["label"]
        load = time.perf_counter() - start

        def epoch(number: int) -> int:
            order = np.random.default_rng(number).permutation(len(images))
            for at in range(0, len(order), BATCH):
                index = np.sort(order[at:at + BATCH])
                batch = torch.from_numpy(images[index]), torch.from_numpy(labels[index])
                assert batch[0].shape[0] == len(index)
            return len(order)
        workers: list = []
    else:
        load = 0.0
        path = os.path.join(folder, "one-per-chunk.zarr" if "1/chunk" in mode else "set/dataset.zarr")
        data = TrainingSet(path)
        count = int(mode.split("W=")[1]) if "W=" in mode else 0
        if "1/chunk" in mode:
            sampler = torch.utils.data.RandomSampler(data, generator=torch.Generator().manual_seed(0))
        else:
            sampler = ChunkShuffleSampler(data, seed=0, workers=max(count, 1), batch_size=BATCH)
        loader = torch.utils.data.DataLoader(data, batch_size=BATCH, sampler=sampler, num_workers=count,
                                             persistent_workers=count > 0)
        workers = []

        def epoch(number: int) -> int:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(number)
            seen = 0
            iterator = iter(loader)
            for batch in iterator:
                seen += len(batch["label"])
            if count and not workers:
                workers.extend(w.pid for w in iterator._workers)
            return seen
    start = time.perf_counter()
    samples = epoch(0)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    total = sum(epoch(e) for e in range(1, epochs + 1))
    seconds = time.perf_counter() - start
    result = {"mode": mode, "samples": samples, "samples_per_s": round(total / seconds), "warmup_s": round(warm, 2),
              "load_s": round(load, 2), "main": _memory(), "workers": [_memory(pid) for pid in workers]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the recording built (default: 5)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up one (default: 3)")
    parser.add_argument("--workdir", default="bench-out")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # one mode in a fresh process (used by the run)
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    folder = prepare(args.workdir, args.minutes)
    if args.mode:
        print(json.dumps(run_mode(folder, args.mode, args.epochs)))
        return
    rows = []
    for mode in ("in RAM", "zarr W=0", "zarr W=2", "zarr 1/chunk, random W=2"):
        out = subprocess.run([sys.executable, __file__, "--minutes", str(args.minutes), "--epochs", str(args.epochs),
                              "--workdir", args.workdir, "--mode", mode], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.splitlines()[-1]))
    reference = rows[0]["samples_per_s"]
    for row in rows:
        row["ratio"] = round(row["samples_per_s"] / reference, 2)
    if args.json:
        print(json.dumps({"minutes": args.minutes, "batch": BATCH, "rows": rows}, indent=1))
        return
    print(f"{rows[0]['samples']} samples, batch {BATCH}, {args.epochs} epochs after a warm-up")
    print(f"{'mode':28} {'samples/s':>10} {'ratio':>6} {'warm-up s':>9} {'main peak MB':>12}  workers peak (pss) MB")
    for r in rows:
        workers = ", ".join(f"{w['peak_rss_mb']} ({w['pss_mb']})" for w in r["workers"]) or "-"
        print(f"{r['mode']:28} {r['samples_per_s']:>10} {r['ratio']:>6} {r['warmup_s']:>9} "
              f"{r['main']['peak_rss_mb']:>12}  {workers}")


if __name__ == "__main__":
    main()
