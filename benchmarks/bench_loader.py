"""Training-loop reading: a PyTorch DataLoader over dataset.zarr against the whole final.npz in RAM, one run.

Builds (once, cached in --workdir) a set from a synthetic recording, its export with lz4 images and its
export with one image per chunk, then times, each in a fresh process, modes interleaved over ``--rounds``:

* ``in RAM``: final.npz's images as the original trainer holds them (float32, read whole), a shuffled
  permutation indexed 64 at a time into tensors: the reference;
* ``STORE samples W=N``: ``DataLoader(TrainingSet(STORE), batch_size=64, sampler=ChunkShuffleSampler)``,
  a dict per sample stacked by the loader's collate, N worker processes (fork); STORE is ``zstd`` (the
  build's dataset.zarr) or ``lz4`` (``export --codec lz4``), stored chunks of 64 images;
* ``STORE batches W=N``: ``DataLoader(TrainingSet(STORE), batch_size=None, sampler=ChunkBatchSampler)``,
  each batch read as one array per field;
* ``... float``: the same, and each batch's images made float32 in [0, 1] in the loop (what the in-RAM
  reference hands over), into a buffer reused from batch to batch;
* ``lz4 ring W=2``: the same batches handed over through a :class:`SharedBatchRing` (each worker reads
  into its own slots of one shared tensor made before the workers start; the loader carries only the slot);
* ``handoff W=2``: a DataLoader whose set reads nothing (each batch a copy of one batch read before, the
  same fields and shapes): what handing a batch from a worker process to the main one costs alone (a new
  shared-memory segment per tensor, its pages written by the worker, its file descriptor passed over);
* ``1/chunk random W=2``: the set exported with one image per stored chunk, read in a plain shuffled order
  (the other layout the issue names: any order, one image decoded per sample).

Reported per mode: the median over rounds of samples/s over ``--epochs`` epochs after a first warm-up
epoch (worker start-up and imports excluded; the warm-up epoch's time is shown apart), its ratio to the
in-RAM reference's median, and peak RSS of the main process and of each worker (``VmHWM``, the largest
over rounds; a forked worker's count includes the pages it shares with the main process, so its own share
is also given as ``Pss``).

    python benchmarks/bench_loader.py [--minutes 5] [--epochs 5] [--rounds 3] [--workdir bench-out] [--json]
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
MODES = ("in RAM", "zstd samples W=0", "zstd samples W=2", "zstd batches W=0", "zstd batches W=2", "lz4 samples W=0",
         "lz4 batches W=0", "lz4 batches W=2", "lz4 batches W=0 float", "lz4 ring W=2", "handoff W=2",
         "1/chunk random W=2")


def _memory(pid: int | str = "self") -> dict[str, float]:
    """Peak resident and proportional-share memory of a process, MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        out.update({"peak_rss_mb": int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")})
    with open(f"/proc/{pid}/smaps_rollup") as f:
        out.update({"pss_mb": int(line.split()[1]) / 1024 for line in f if line.startswith("Pss:")})
    return {k: round(v) for k, v in out.items()}


def prepare(workdir: str, minutes: float) -> str:
    """A built set (dataset.zarr, final.npz), its lz4 export and its one-image-per-chunk export, made once."""
    from jumpnet_stream.build import Session, build
    from jumpnet_stream.synth import make_recording

    folder = os.path.join(workdir, f"loader-{minutes:g}min")
    if not os.path.exists(os.path.join(folder, "set", "manifest.json")):
        rec = make_recording(os.path.join(folder, "in"), name="play", seconds=60 * minutes, keys=("w",), seed=31)
        build([Session(rec.npz, rec.video)], os.path.join(folder, "set"))
    for name, option in (("one-per-chunk.zarr", ["--rechunk", "1"]), ("lz4.zarr", ["--codec", "lz4"])):
        if not os.path.exists(os.path.join(folder, name)):
            subprocess.run([sys.executable, "-m", "jumpnet_stream", "export",
                            os.path.join(folder, "set", "dataset.zarr"), "-o", os.path.join(folder, name), *option,
                            "--quiet"], check=True)
    return folder


def run_mode(folder: str, mode: str, epochs: int) -> dict:
    """One mode, in this (fresh) process: warm-up epoch, then ``epochs`` timed ones."""
    import numpy as np
    import torch

    from jumpnet_stream import Chunk, open_dataset
    from jumpnet_stream.training_set import ChunkBatchSampler, ChunkShuffleSampler, SharedBatchRing, TrainingSet

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
        store = {"zstd": "set/dataset.zarr", "lz4": "lz4.zarr", "1/chunk": "one-per-chunk.zarr",
                 "handoff": "lz4.zarr"}[mode.split()[0]]
        data = TrainingSet(os.path.join(folder, store))
        count = int(mode.split("W=")[1].split()[0])
        batched = " batches " in mode or " ring " in mode or mode.startswith("handoff")
        if mode.startswith("handoff"):
            sampler = ChunkBatchSampler(data, seed=0, workers=max(count, 1), batch_size=BATCH)
            data = _Handoff(data.batch(list(range(BATCH))), len(data))
        elif mode.startswith("1/chunk"):
            sampler = torch.utils.data.RandomSampler(data, generator=torch.Generator().manual_seed(0))
        elif batched:
            sampler = ChunkBatchSampler(data, seed=0, workers=max(count, 1), batch_size=BATCH)
        else:
            sampler = ChunkShuffleSampler(data, seed=0, workers=max(count, 1), batch_size=BATCH)
        ring = SharedBatchRing(data, workers=count, batch_size=BATCH) if " ring " in mode else None
        loader = torch.utils.data.DataLoader(data if ring is None else ring, batch_size=None if batched else BATCH,
                                             sampler=sampler, num_workers=count, persistent_workers=count > 0,
                                             **({} if ring is None else {"collate_fn": ring.collate}))
        floats = torch.empty((BATCH, *data.image_shape), dtype=torch.float32) if mode.endswith(" float") else None
        workers = []

        def epoch(number: int) -> int:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(number)
            seen = 0
            iterator = iter(loader) if ring is None else ring.batches(loader)
            for batch in iterator:
                if floats is not None:
                    image = floats[:len(batch["image"])].copy_(batch["image"]).mul_(1 / 255)
                    assert image.dtype == torch.float32
                seen += len(batch["label"])
            if count and not workers:
                workers.extend(w.pid for w in loader._iterator._workers)
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


class _Handoff:
    """A set that reads nothing: every batch a copy of ``batch`` (cut to the batch's size)."""

    def __init__(self, batch: dict, length: int):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, indices: list[int]) -> dict:
        return {name: column[:len(indices)].copy() for name, column in self.batch.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the recording built (default: 5)")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs after the warm-up one (default: 5)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every mode, interleaved (default: 3)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"modes to run (default: {','.join(MODES)})")
    parser.add_argument("--workdir", default="bench-out")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # one mode in a fresh process (used by the run)
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    folder = prepare(args.workdir, args.minutes)
    if args.mode:
        print(json.dumps(run_mode(folder, args.mode, args.epochs)))
        return
    modes = args.modes.split(",")
    if modes[0] != "in RAM":
        modes.insert(0, "in RAM")
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, "--minutes", str(args.minutes), "--epochs",
                                  str(args.epochs), "--workdir", args.workdir, "--mode", mode],
                                 capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.splitlines()[-1]))
    rows = [_summary(mode, rounds) for mode, rounds in runs.items()]
    reference = rows[0]["samples_per_s"]
    for row in rows:
        row["ratio"] = round(row["samples_per_s"] / reference, 2)
    if args.json:
        print(json.dumps({"minutes": args.minutes, "batch": BATCH, "rounds": args.rounds, "rows": rows}, indent=1))
        return
    print(f"{rows[0]['samples']} samples, batch {BATCH}, {args.epochs} epochs after a warm-up, median of {args.rounds} "
          "interleaved rounds")
    print(f"{'mode':26} {'samples/s':>10} {'ratio':>6} {'warm-up s':>9} {'main peak MB':>12}  workers peak (pss) MB")
    for r in rows:
        workers = ", ".join(f"{w['peak_rss_mb']} ({w['pss_mb']})" for w in r["workers"]) or "-"
        print(f"{r['mode']:26} {r['samples_per_s']:>10} {r['ratio']:>6} {r['warmup_s']:>9} "
              f"{r['main']['peak_rss_mb']:>12}  {workers}")


def _summary(mode: str, rounds: list[dict]) -> dict:
    """A mode's rounds: median throughput and warm-up, largest peaks (per worker slot)."""
    import statistics

    workers = [{key: max(r["workers"][w][key] for r in rounds) for key in ("peak_rss_mb", "pss_mb")}
               for w in range(min(len(r["workers"]) for r in rounds))]
    return {"mode": mode, "samples": rounds[0]["samples"],
            "samples_per_s": round(statistics.median(r["samples_per_s"] for r in rounds)),
            "all_samples_per_s": [r["samples_per_s"] for r in rounds],
            "warmup_s": round(statistics.median(r["warmup_s"] for r in rounds), 2),
            "load_s": round(statistics.median(r["load_s"] for r in rounds), 2),
            "main": {key: max(r["main"][key] for r in rounds) for key in ("peak_rss_mb", "pss_mb")},
            "workers": workers}


if __name__ == "__main__":
    main()
