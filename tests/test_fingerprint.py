"""Input fingerprints (issue 16): xxh3_128 named in the manifest, reused from the previous manifest while an
input's size, modification time and inode are unchanged (so it is not read again), hashed anew otherwise,
and a manifest of the SHA-256 days still builds."""

from __future__ import annotations

import json
import os
import shutil

import xxhash

from jumpnet_stream.build import BuildOptions, Session, build
from jumpnet_stream.build.manifest import file_record
from jumpnet_stream.synth import make_recording

OPTIONS = BuildOptions(negatives=20, multiplier=1, legacy=False)


def rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line.split()[1] for line in f if line.startswith("rchar:")))


def xxh3(path) -> dict:
    with open(path, "rb") as f:
        return {"algorithm": "xxh3_128", "digest": xxhash.xxh3_128(f.read()).hexdigest()}


def test_a_record_is_reused_only_while_size_mtime_and_inode_are_unchanged(tmp_path):
    path = tmp_path / "input.bin"
    path.write_bytes(os.urandom(3 << 20))
    first = file_record(str(path))
    assert first["hash"] == xxh3(path) and first["bytes"] == 3 << 20
    before = rchar()
    assert file_record(str(path), first) == first
    assert rchar() - before < 1 << 16  # not read again
    forged = {**first, "hash": {"algorithm": "xxh3_128", "digest": "0" * 32}}
    assert file_record(str(path), forged)["hash"]["digest"] == "0" * 32  # what says unchanged: the stat alone
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert file_record(str(path), forged)["hash"] == first["hash"]  # touched: hashed again
    copy = tmp_path / "copy.bin"
    shutil.copy2(path, copy)  # the same size and mtime, another inode (a file replaced by a copy)
    os.replace(copy, path)
    replaced = {**forged, "mtime_ns": os.stat(path).st_mtime_ns}
    assert file_record(str(path), replaced)["hash"] == first["hash"]
    now = file_record(str(path))
    sha = {key: value for key, value in now.items() if key != "hash"} | {"sha256": "ab" * 32}
    before = rchar()
    assert file_record(str(path), sha) == now  # an older manifest's SHA-256 record: hashed anew
    assert rchar() - before >= 3 << 20


def test_a_build_records_xxh3_and_rebuilds_from_a_sha256_manifest(tmp_path):
    rec = make_recording(tmp_path / "in", name="play", seconds=6, keys=("w",), seed=3)
    out = tmp_path / "set"
    build([Session(rec.npz, rec.video)], out, OPTIONS)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["inputs"][0]
    assert entry["raw"]["hash"] == xxh3(rec.npz) and entry["video"]["hash"] == xxh3(rec.video)
    assert entry["raw"]["inode"] == os.stat(rec.npz).st_ino

    again = build([Session(rec.npz, rec.video)], out, OPTIONS)
    assert not again.ran and json.loads(manifest_path.read_text())["inputs"] == manifest["inputs"]

    for kind in ("raw", "video"):  # as an earlier version wrote it
        record = entry[kind]
        record["sha256"] = "ab" * 32
        del record["hash"], record["inode"]
    manifest_path.write_text(json.dumps(manifest))
    rebuilt = build([Session(rec.npz, rec.video)], out, OPTIONS)
    assert not rebuilt.ran  # hashed anew (not a crash), and the same content: every stage reused
    assert json.loads(manifest_path.read_text())["inputs"][0]["raw"]["hash"] == xxh3(rec.npz)
