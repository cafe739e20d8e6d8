"""The build's outputs stay the bytes of the sequential path (issue 16): every file of ``dataset.zarr`` and
every member of ``final.npz`` of a small recording against digests computed by the build as it was before
the issue's levers (commit c338c72: keylog images read whole, SHA-256 fingerprints, zstd spool, final.npz
through the page cache) on a recording of today's synth.py (recomputed with c338c72's build when synthetic
captures began to be resized from the window), with this environment's libraries (OpenCV writes the video,
zstd the chunks). The metadata that names input paths (the store's zarr.json, the npz's provenance) is compared with the build's
root replaced."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import numpy as np

from jumpnet_stream.build import BuildOptions, Session, build
from jumpnet_stream.synth import make_recording

EXPECTED = {
    "dataset.zarr/augmented/c.0": "32c69624f54ba7ac",
    "dataset.zarr/augmented/zarr.json": "c1160a37938bec6d",
    "dataset.zarr/copy/c.0": "1097b2e42d5e595d",
    "dataset.zarr/copy/zarr.json": "311acf75c5aa2ebc",
    "dataset.zarr/frame_index/c.0": "1124fea61f57a8da",
    "dataset.zarr/frame_index/zarr.json": "4daf27cd695df9ff",
    "dataset.zarr/hold_duration/c.0.0": "cd2adfb323d4e267",
    "dataset.zarr/hold_duration/zarr.json": "1cc6cefe5816609c",
    "dataset.zarr/image/c.0.0.0.0": "624271d0b31f668b",
    "dataset.zarr/image/c.1.0.0.0": "114a9a8c5e6fc555",
    "dataset.zarr/image/zarr.json": "0db58d51a0f1a3d4",
    "dataset.zarr/keys_raw/c.0.0": "5d446a1f0cfcf787",
    "dataset.zarr/keys_raw/zarr.json": "1cc6cefe5816609c",
    "dataset.zarr/label/c.0": "ab5a6b3b95c8d96a",
    "dataset.zarr/label/zarr.json": "327d476be40b690d",
    "dataset.zarr/phase/c.0": "91882365bad32f62",
    "dataset.zarr/phase/zarr.json": "99f005ed5049d70d",
    "dataset.zarr/release_index/c.0": "1c0eeb11e7eaa35b",
    "dataset.zarr/release_index/zarr.json": "4daf27cd695df9ff",
    "dataset.zarr/source/c.0": "db541397f57b3646",
    "dataset.zarr/source/zarr.json": "99f005ed5049d70d",
    "dataset.zarr/split/c.0": "93866f67dbb11de8",
    "dataset.zarr/split/zarr.json": "99f005ed5049d70d",
    "dataset.zarr/weight/c.0": "f8a13e28ef46dc94",
    "dataset.zarr/weight/zarr.json": "327d476be40b690d",
    "dataset.zarr/zarr.json": "1de447aa9c3d7dcc",
    "final.npz/data.npy": "b157ec0dfa0829af",
    "final.npz/data_rows.npy": "e09fb76652872222",
    "final.npz/keys.npy": "06da7ac87f0d4b09",
    "final.npz/provenance.npy": "934a7f3b34368c9e",
}


def digests(root) -> dict[str, str]:
    out = {}
    store = os.path.join(root, "set", "dataset.zarr")
    for folder, _, names in os.walk(store):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = f.read()
            if name == "zarr.json":
                data = data.replace(os.fspath(root).encode(), b"ROOT")
            out["dataset.zarr/" + os.path.relpath(path, store)] = hashlib.sha256(data).hexdigest()[:16]
    with zipfile.ZipFile(os.path.join(root, "set", "final.npz")) as zf:
        for name in zf.namelist():
            data = zf.read(name)
            if name == "provenance.npy":
                data = str(np.load(io.BytesIO(data))).replace(os.fspath(root), "ROOT").encode()
            out["final.npz/" + name] = hashlib.sha256(data).hexdigest()[:16]
    return out


def test_the_build_writes_the_sequential_paths_bytes(tmp_path):
    rec = make_recording(tmp_path / "in", name="play", seconds=12, keys=("w", "a"), seed=5)
    build([Session(rec.npz, rec.video)], tmp_path / "set", BuildOptions(negatives=60))
    assert os.path.getsize(tmp_path / "set" / "final.npz") > 32 << 20  # written behind, a block at a time
    assert digests(tmp_path) == EXPECTED
