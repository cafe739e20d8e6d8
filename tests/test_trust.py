"""A training set a model can trust (issue 14), built through the command line from recordings made the
recorder's way: no frame inside a jump as a negative, a validation split that cannot leak, balance and
weights, and no trivial image statistic that tells the classes apart (the shortcut audit, and its remedy)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import run_cli
from jumpnet_stream import Chunk, create_dataset, open_dataset
from jumpnet_stream.kernels import resize_rgb
from jumpnet_stream.quality import TARGET_AUC, roc_auc
from jumpnet_stream.recorder import mask_labels
from jumpnet_stream.recording import Recording
from jumpnet_stream.synth import make_recording


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One 40-second two-key recording in the recorder's layout."""
    root = tmp_path_factory.mktemp("trust")
    rec = make_recording(root / "in", name="run", seconds=40, keys=("w", "a"), seed=31, folders=True)
    return root / "in", rec


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Four short recordings: enough to validate on whole ones."""
    root = tmp_path_factory.mktemp("four")
    for i in range(4):
        make_recording(root / "in", name=f"r{i}", seconds=9, keys=("w",), seed=40 + i, folders=True)
    return root / "in"


def build(inputs, out, *args) -> tuple[dict, dict]:
    result = run_cli("build", str(inputs), "-o", str(out), "--json", *map(str, args))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), json.loads((out / "manifest.json").read_text())


def read(path) -> Chunk:
    return Chunk.concat(list(open_dataset(path).chunks()))


def jumps(keylog: str) -> list[tuple[int, int]]:
    """(press frame, release frame) of every jump of 'w', from the keylog's events."""
    out, start, held = [], None, False
    for chunk in Recording(keylog).events():
        for hot, frame in zip(chunk["multi_hot"][:, 0] > 0.5, chunk["frame_idx"]):
            if hot and not held:
                start = int(frame)
            if held and not hot:
                out.append((start, int(frame)))
            held = hot
    return out


def test_frames_inside_a_jump_are_not_negatives(session, tmp_path):
    folder, rec = session
    report, manifest = build(folder, tmp_path / "out", "--negatives", 5000,  # every eligible frame
                             "--multiplier", 0, "--no-legacy")
    held = {f for press, release in jumps(rec.npz) for f in range(press, release)}
    data = read(tmp_path / "out" / "dataset.zarr")
    negatives = set(data["frame_index"][data["label"] == 0].tolist())
    assert negatives and held and not negatives & held
    frames = manifest["accounting"]["recordings"]["run"]["frames"]
    assert frames["held"] > 0 and frames["frames"] == sum(v for k, v in frames.items() if k != "frames")
    _, seed = build(folder, tmp_path / "seed", "--negatives", 5000, "--held-frames", "negative", "--multiplier", 0,
                    "--no-legacy")
    seed_negatives = read(tmp_path / "seed" / "dataset.zarr")
    assert set(seed_negatives["frame_index"][seed_negatives["label"] == 0].tolist()) & held  # the seed's way
    assert seed["accounting"]["recordings"]["run"]["frames"]["held"] == 0


def test_positives_are_the_video_frames_masked(session, tmp_path):
    """By default a positive's image is the video frame at its press, resized like the negatives, with the
    recorder's label strip masked (in every image of both classes)."""
    folder, rec = session
    build(folder, tmp_path / "out", "--negatives", 50, "--multiplier", 0)
    data = read(tmp_path / "out" / "dataset.zarr")
    capture = cv2.VideoCapture(rec.video)
    video = [capture.read()[1] for _ in range(rec.frames)]
    for image, frame in zip(data["image"], data["frame_index"]):
        want = mask_labels(resize_rgb(video[min(frame, rec.frames - 1)], (227, 227)))
        np.testing.assert_array_equal(image, want)
    assert not data["image"][:, :26].any()  # the strip that holds the labels


def test_a_block_split_cannot_leak(session, tmp_path):
    folder, rec = session
    report, manifest = build(folder, tmp_path / "out", "--val-fraction", 0.25, "--negatives", 400)
    split = manifest["split"]
    assert split["mode"] == "blocks" and split["gap"] >= 2
    data = read(tmp_path / "out" / "dataset.zarr")
    val, train = data["split"] == "val", data["split"] == "train"
    assert val.sum() and train.sum() and (val | train).all()
    # no validation frame within the gap of a training frame (one recording: every frame pair compared)
    distance = np.abs(data["frame_index"][val][:, None] - data["frame_index"][train][None, :]).min()
    assert distance > split["gap"]
    # validation keeps originals only; no copy of a validation positive is in training
    assert not data["augmented"][val].any() and set(data["copy"][val].tolist()) == {0}
    val_positives = set(data["frame_index"][val & (data["label"] == 1)].tolist())
    assert val_positives and not val_positives & set(data["frame_index"][train & (data["label"] == 1)].tolist())
    # the manifest's zones hold their samples
    zones = split["recordings"]["run"]
    for name, mask in (("val", val), ("train", train)):
        inside = np.zeros(mask.sum(), bool)
        for start, stop in zones[name]:
            inside |= (data["frame_index"][mask] >= start) & (data["frame_index"][mask] < stop)
        assert inside.all(), name
    # the legacy export: one file per split
    assert len(open_dataset(tmp_path / "out" / "final.npz")) == train.sum()
    assert len(open_dataset(tmp_path / "out" / "final-val.npz")) == val.sum()
    assert report["splits"]["val"]["positives"] == int((val & (data["label"] == 1)).sum())
    # seeded: the same seed, the same split; another seed, another (the split does not depend on the samples)
    cheap = ("--negatives", 20, "--multiplier", 0, "--no-legacy")
    _, again = build(folder, tmp_path / "again", "--val-fraction", 0.25, *cheap)
    _, other = build(folder, tmp_path / "other", "--val-fraction", 0.25, "--seed", 7, *cheap)
    assert again["split"] == split and other["split"]["recordings"] != split["recordings"]


def test_whole_recordings_validate_when_there_are_enough(sessions, tmp_path):
    report, manifest = build(sessions, tmp_path / "out", "--val-fraction", 0.25, "--negatives", 200)
    assert manifest["split"]["mode"] == "recordings"
    data = read(tmp_path / "out" / "dataset.zarr")
    by_source = {source: set(data["split"][data["source"] == source].tolist()) for source in set(data["source"])}
    assert sorted(map(sorted, by_source.values())) == [["train"]] * 3 + [["val"]]


def test_negatives_as_a_ratio_and_class_weights(session, tmp_path):
    folder, _ = session
    report, manifest = build(folder, tmp_path / "out", "--val-fraction", 0.25, "--negative-ratio", 1.5)
    data = read(tmp_path / "out" / "dataset.zarr")
    for split in ("train", "val"):
        mine = data["split"] == split
        positives, negatives = int((mine & (data["label"] == 1)).sum()), int((mine & (data["label"] == 0)).sum())
        assert negatives == round(1.5 * positives), split
        weights = report["class_weights"][split]
        total = positives + negatives
        assert weights["positive"] == pytest.approx(total / (2 * positives))
        assert weights["negative"] == pytest.approx(total / (2 * negatives))
        np.testing.assert_allclose(data["weight"][mine & (data["label"] == 1)], weights["positive"], rtol=1e-6)
        np.testing.assert_allclose(data["weight"][mine & (data["label"] == 0)], weights["negative"], rtol=1e-6)
    assert ((data["copy"] > 0) == data["augmented"]).all()
    train_positives = (data["split"] == "train") & (data["label"] == 1)
    assert (data["copy"][train_positives] > 0).sum() == 2 * (data["copy"][train_positives] == 0).sum()
    assert set(data["source"]) == {"run"}


def test_the_audit_finds_the_shortcut_and_the_default_removes_it(session, tmp_path):
    folder, _ = session
    report, manifest = build(folder, tmp_path / "seed", "--positive-images", "keylog", "--held-frames", "negative")
    seed = report["audit"]["auc"]
    assert seed["sharpness"] > 0.7, seed  # clean captures against decoded video frames
    report, manifest = build(folder, tmp_path / "default")
    default = report["audit"]["auc"]
    assert all(value < TARGET_AUC for value in default.values()), default
    assert manifest["audit"]["auc"] == default and report["audit"]["warnings"] == []
    shown = run_cli("inspect", str(tmp_path / "default" / "dataset.zarr"), "--json")
    assert json.loads(shown.stdout)["audit"]["auc"] == default
    summary = run_cli("build", str(folder), "-o", str(tmp_path / "default"))
    assert "shortcut audit (ROC AUC; 0.5 is chance): sharpness" in summary.stdout


def test_the_audit_warns_and_names_the_statistic(tmp_path):
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    blurred = np.stack([cv2.GaussianBlur(image, (7, 7), 3) for image in sharp])
    n = 40
    with create_dataset(tmp_path / "shortcut.zarr", ["w"]) as writer:
        writer.write(Chunk({"image": np.concatenate([sharp, blurred]), "label": np.repeat([1.0, 0.0], n).astype(np.float32),
                            "keys_raw": np.zeros((2 * n, 1), np.float32), "hold_duration": np.zeros((2 * n, 1), np.float32),
                            "phase": np.full(2 * n, "press"), "frame_index": np.arange(2 * n)}))
    shown = run_cli("inspect", str(tmp_path / "shortcut.zarr"))
    assert "warning: sharpness alone tells positives from negatives (AUC 1.00)" in shown.stdout


def test_roc_auc_against_its_definition():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.integers(0, 5, rng.integers(1, 30)), rng.integers(0, 5, rng.integers(1, 30))
        pairs = [(x > y) + 0.5 * (x == y) for x in a for y in b]
        assert roc_auc(a, b) == pytest.approx(np.mean(pairs))
    assert roc_auc(np.array([]), np.array([1.0])) is None
