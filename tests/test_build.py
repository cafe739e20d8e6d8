"""build: every stage from recordings to a shuffled set, the manifest's accounting, resuming, config, demo."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xxhash

from conftest import ROOT, run_cli
from jumpnet_stream import open_dataset
from jumpnet_stream.build import BuildOptions, build, pair_directory
from jumpnet_stream.errors import JumpnetError
from jumpnet_stream.sampling import Frames, choose_across
from jumpnet_stream.synth import make_recording


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Two recordings in the recorder's layout: collected/<name>.npz and recordings/<name>_<HHMMSS>.mp4."""
    root = tmp_path_factory.mktemp("sessions")
    recs = [make_recording(root / "tmp", name="alpha", seconds=14, keys=("w",), seed=11),
            make_recording(root / "tmp", name="beta", seconds=10, keys=("a", "w"), seed=12, layout="tuples",
                           malformed=2, wrinkles=True)]
    for folder in ("collected", "recordings"):
        (root / folder).mkdir()
    for rec in recs:
        shutil.move(rec.npz, root / "collected" / os.path.basename(rec.npz))
        shutil.move(rec.video, root / "recordings" / os.path.basename(rec.video))
    return root


def tree_digest(*paths) -> dict[str, str]:
    """SHA-256 of every file under ``paths``, by relative name."""
    digests = {}
    for path in paths:
        files = [path] if os.path.isfile(path) else sorted(
            os.path.join(folder, f) for folder, _, names in os.walk(path) for f in names)
        for f in files:
            with open(f, "rb") as handle:
                digests[os.path.relpath(f, os.path.dirname(path))] = hashlib.sha256(handle.read()).hexdigest()
    return digests


def test_pairing_follows_the_recorder_naming(sessions):
    pairs = pair_directory(sessions)
    assert [(os.path.basename(p.raw), os.path.basename(p.video)) for p in pairs] == [
        ("alpha.npz", "alpha_120000.mp4"), ("beta.npz", "beta_120000.mp4")]


def test_build_counts_add_up(sessions, tmp_path):
    result = run_cli("build", str(sessions), "-o", str(tmp_path / "out"), "--negatives", "60", "--multiplier", "3",
                     "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stages = manifest["stages"]
    paired = sum(stages[f"preprocess {n}"]["counts"]["paired"] for n in ("alpha", "beta"))
    unreleased = sum(stages[f"preprocess {n}"]["counts"]["unmatched_final_press"] for n in ("alpha", "beta"))
    assert paired > 10

    dataset = open_dataset(tmp_path / "out" / "dataset.zarr")
    labels, frames = dataset.column("label"), dataset.column("frame_index")
    assert int((labels == 1).sum()) == paired * 4 == report["positives"]
    assert int((labels == 0).sum()) == 60 == report["negatives"]
    assert len(dataset) == report["samples"] == paired * 4 + 60
    assert dataset.keys == ["a", "w"]
    assert not np.all(np.diff(labels) <= 0) and not np.all(np.diff(labels) >= 0)  # shuffled, not grouped
    assert not np.array_equal(np.sort(frames), frames)

    accounting = manifest["accounting"]
    for name in ("alpha", "beta"):
        events, counts = accounting["recordings"][name]["events"], stages[f"preprocess {name}"]["counts"]
        assert events["total"] == sum(v for k, v in events.items() if k != "total") == counts["total"]
        assert events["malformed"] == counts["malformed"] == (2 if name == "beta" else 0)
        frame_counts = accounting["recordings"][name]["frames"]
        assert frame_counts["frames"] == sum(v for k, v in frame_counts.items() if k != "frames")
        negatives = open_dataset(tmp_path / "out" / stages[f"frames {name}"]["outputs"][0])
        assert len(negatives) == frame_counts["negatives"]
        positives_near = set()
        positives = open_dataset(tmp_path / "out" / stages[f"preprocess {name}"]["outputs"][0])
        for f, release in zip(positives.column("frame_index"), positives.column("release_index")):
            positives_near.update(range(f - 2, f + 3))
            positives_near.update(range(f, release))  # inside the jump: held frames are no negatives
        assert not positives_near & set(negatives.column("frame_index").tolist())  # the radius holds
    assert accounting["positives"]["from_recordings"] == paired + unreleased
    assert accounting["positives"]["dropped_unreleased"] == unreleased
    assert accounting["dataset"]["samples"] == accounting["dataset"]["positives"] + accounting["dataset"]["negatives"]

    for entry in manifest["inputs"]:
        for kind in ("raw", "video"):
            with open(entry[kind]["path"], "rb") as f:
                assert entry[kind]["hash"] == {"algorithm": "xxh3_128", "digest": xxhash.xxh3_128(f.read()).hexdigest()}
            assert entry[kind]["bytes"] == os.path.getsize(entry[kind]["path"])

    with np.load(tmp_path / "out" / "final.npz", allow_pickle=True) as z:  # our own output: the trainer's loader
        data = z["data"]
        assert data.shape == (len(dataset), 6) and list(z["keys"]) == ["a", "w"]
        assert sorted(float(entry[1]) for entry in data) == sorted(labels.tolist())
        assert data[0][0].dtype == np.float32 and data[0][0].shape == (227, 227, 3)
        for entry in data:  # the original trainer's access pattern, on a two-key set, on this numpy
            pixels = (entry[0] * 255).clip(0, 255).astype(np.uint8)
            assert pixels.shape == (227, 227, 3)
            assert float(entry[3]) == entry[3].flatten()[0]
    holds = dataset.column("hold_duration")[:, 1]  # 'w', the jump key
    with np.load(tmp_path / "out" / "final.npz", allow_pickle=True) as z:
        assert sorted(float(entry[3]) for entry in z["data"]) == sorted(holds.tolist())


def test_unreleased_presses_are_left_out_and_counted(tmp_path):
    """A keylog cut before its last release: that press's positive (hold NaN) is out of the set unless asked for."""
    rec = make_recording(tmp_path / "in", name="cut", seconds=6, keys=("w",), seed=5, writer="numpy")
    with np.load(rec.npz, allow_pickle=True) as z:  # our own generated file
        data, keys = z["data"], z["keys"]
    last_release = max(i for i, entry in enumerate(data) if str(entry[4]).strip().lower() == "release")
    np.savez(rec.npz, data=data[:last_release], keys=keys)
    dropped = build(pair_directory(tmp_path / "in"), tmp_path / "out", BuildOptions(negatives=5, multiplier=1))
    kept = build(pair_directory(tmp_path / "in"), tmp_path / "kept",
                 BuildOptions(negatives=5, multiplier=1, keep_unreleased=True))
    assert dropped.accounting["positives"]["dropped_unreleased"] == 1
    assert kept.accounting["positives"]["dropped_unreleased"] == 0
    assert kept.positives == dropped.positives + 2
    assert not np.isnan(open_dataset(tmp_path / "out" / "dataset.zarr").column("hold_duration")).any()
    assert np.isnan(open_dataset(tmp_path / "kept" / "dataset.zarr").column("hold_duration")).sum() == 2


def choose_negatives(eligible, total, seed):
    return choose_across([Frames.spans(e, e + 1) for e in eligible], total, seed)


def test_negatives_are_uniform_over_all_recordings():
    eligible = [np.arange(0, 1000, 2), np.arange(5, 105)]
    chosen = choose_negatives(eligible, 120, seed=3)
    assert sum(len(c) for c in chosen) == 120
    assert all(np.isin(c, e).all() and np.all(np.diff(c) > 0) for c, e in zip(chosen, eligible))
    shares = np.mean([len(choose_negatives(eligible, 120, seed=s)[1]) for s in range(200)])
    assert abs(shares - 120 * 100 / 600) < 1.5  # in proportion to each recording's eligible frames
    assert [len(c) for c in choose_negatives(eligible, 10_000, seed=0)] == [500, 100]


def test_killed_build_resumes_to_identical_output(sessions, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "jumpnet_stream", "build", str(sessions), "-o", str(out), "--negatives", "80",
            "--json"]
    first = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert first.returncode == 0, first.stderr
    reference = tree_digest(out / "dataset.zarr", out / "final.npz")
    reference_manifest = json.loads((out / "manifest.json").read_text())
    shutil.rmtree(out)

    # Kill it with SIGKILL as soon as the second recording's positives are recorded: mid-way through the stages.
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if "preprocess beta" in json.loads((out / "manifest.json").read_text())["stages"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "final.npz").exists()

    resumed = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert "preprocess alpha" in report["reused"] and "final" in report["ran"]
    assert tree_digest(out / "dataset.zarr", out / "final.npz") == reference
    assert json.loads((out / "manifest.json").read_text())["accounting"] == reference_manifest["accounting"]
    assert not [f for _, dirs, files in os.walk(out) for f in dirs + files if ".partial-" in f]

    again = json.loads(run_cli("build", str(sessions), "-o", str(out), "--negatives", "80", "--json").stdout)
    assert again["ran"] == [] and len(again["reused"]) == 9
    changed = json.loads(run_cli("build", str(sessions), "-o", str(out), "--negatives", "50", "--json").stdout)
    assert set(changed["ran"]) == {"frames alpha", "frames beta", "positives", "augment", "dataset", "audit", "final"}
    assert changed["negatives"] == 50


def test_config_file_holds_options_and_recordings(sessions, tmp_path):
    config = tmp_path / "build.toml"
    config.write_text(f'output = "out"\nnegatives = 30\nmultiplier = 1\nlegacy = false\n'
                      f'[[recording]]\nraw = "{sessions}/collected/alpha.npz"\n'
                      f'video = "{sessions}/recordings/alpha_120000.mp4"\n')
    result = run_cli("build", "--config", str(config), "--seed", "7", "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["options"]["negatives"] == 30 and manifest["options"]["seed"] == 7
    assert manifest["options"]["multiplier"] == 1 and not (tmp_path / "out" / "final.npz").exists()
    assert [os.path.basename(i["raw"]["path"]) for i in manifest["inputs"]] == ["alpha.npz"]
    assert json.loads(result.stdout)["negatives"] == 30

    config.write_text('negatives = 30\nshuffle = true\n')
    bad = run_cli("build", "--config", str(config), "-o", str(tmp_path / "bad"))
    assert bad.returncode == 1 and "unknown setting(s) shuffle" in bad.stderr and str(config) in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("case, message", [
    ("no video", "no video named"),
    ("two videos", "several videos could be its recording"),
    ("not empty", "is not empty and holds no earlier build"),
    ("unpaired flags", "keylogs and videos go in pairs"),
])
def test_build_input_errors(sessions, tmp_path, case, message):
    folder = tmp_path / "in"
    shutil.copytree(sessions / "collected", folder)
    shutil.copy(sessions / "recordings" / "alpha_120000.mp4", folder)
    args = [str(folder)]
    if case == "two videos":
        shutil.copy(sessions / "recordings" / "alpha_120000.mp4", folder / "alpha_130000.mp4")
        os.remove(folder / "beta.npz")
    if case == "not empty":
        os.remove(folder / "beta.npz")
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "notes.txt").write_text("mine")
    if case == "unpaired flags":
        args = ["--recording", str(folder / "alpha.npz")]
    result = run_cli("build", *args, "-o", str(tmp_path / "out"))
    assert result.returncode == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert case == "not empty" or not (tmp_path / "out").exists()
    with pytest.raises(JumpnetError, match="negatives must be"):
        BuildOptions(negatives=-1)


def test_a_build_folder_never_lies(sessions, tmp_path):
    """--no-legacy after a legacy build removes final.npz (and says so); a rerun says what it reused, not 'wrote'."""
    out = tmp_path / "a" / "b" / "out"  # missing parents are made
    first = run_cli("build", str(sessions), "-o", str(out), "--negatives", "20", "--multiplier", "1")
    assert first.returncode == 0, first.stderr
    assert "wrote dataset.zarr, final.npz, manifest.json" in first.stdout
    again = run_cli("build", str(sessions), "-o", str(out), "--negatives", "20", "--multiplier", "1")
    assert "unchanged from the earlier run: dataset.zarr, final.npz" in again.stdout
    assert "wrote manifest.json" in again.stdout and "wrote dataset.zarr" not in again.stdout
    no_legacy = run_cli("build", str(sessions), "-o", str(out), "--negatives", "20", "--multiplier", "1",
                        "--no-legacy", "--json")
    report = json.loads(no_legacy.stdout)
    assert report["removed"] == ["final.npz"] and report["unchanged"] == ["dataset.zarr"]
    assert not (out / "final.npz").exists()
    assert "final.npz" not in json.loads((out / "manifest.json").read_text())["outputs"]


def test_a_failed_build_keeps_what_finished(sessions, tmp_path):
    """A stage that fails leaves every finished stage reusable: the same build again redoes none of them."""
    folder = tmp_path / "in"
    shutil.copytree(sessions, folder)
    short = folder / "recordings" / "beta_120000.mp4"  # beta's video swapped for a far shorter one
    make_recording(tmp_path / "short", name="beta", seconds=1, keys=("w",), seed=1)
    shutil.copy(tmp_path / "short" / "beta_120000.mp4", short)
    out = tmp_path / "out"
    for attempt in range(2):
        result = run_cli("build", str(folder), "-o", str(out), "--negatives", "20")
        assert result.returncode == 1 and "is the keylog from another recording?" in result.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert {"preprocess alpha", "preprocess beta"} <= set(manifest["stages"])
        stamps = {p: os.path.getmtime(out / "work" / p) for p in os.listdir(out / "work")}
        if attempt == 1:
            assert stamps == earlier, "the second, identical build redid finished stages"
        earlier = stamps
    shutil.copy(sessions / "recordings" / "beta_120000.mp4", short)
    fixed = json.loads(run_cli("build", str(folder), "-o", str(out), "--negatives", "20", "--json").stdout)
    assert {"preprocess alpha", "preprocess beta"} <= set(fixed["reused"])


def test_options_and_inputs_refused_before_any_work(sessions, tmp_path):
    alpha = str(sessions / "collected" / "alpha.npz")
    video = str(sessions / "recordings" / "alpha_120000.mp4")
    twice = run_cli("build", "--recording", alpha, "--video", video, "--recording", alpha, "--video", video,
                    "-o", str(tmp_path / "out"))
    assert twice.returncode == 1 and f"{alpha}: this keylog is given twice" in twice.stderr
    key = run_cli("build", str(sessions), "-o", str(tmp_path / "out"), "--key", "q")
    assert key.returncode == 1 and "key 'q' is not in the recording's keys (w)" in key.stderr
    assert not (tmp_path / "out").exists()


def test_demo_then_inspect(tmp_path):
    demo = run_cli("demo", str(tmp_path / "demo"), "--seconds", "8")
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "demo" / "sheet.png").stat().st_size > 10_000
    manifest = json.loads((tmp_path / "demo" / "build" / "manifest.json").read_text())
    shown = run_cli("inspect", str(tmp_path / "demo" / "build" / "final.npz"), "-n", "2", "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["samples"] == manifest["accounting"]["dataset"]["samples"]
    assert summary["negatives"] == manifest["accounting"]["dataset"]["negatives"]
    assert len(summary["previews"]) == 2
    assert (tmp_path / "demo" / "collected" / "demo.npz").is_file()  # the recorder's layout
    assert (tmp_path / "demo" / "recordings" / "demo_120000.mp4").is_file()
