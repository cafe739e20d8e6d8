"""Stage 1 against the seed's behaviour (tests/seed_reference.py), through the API and the CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import zarr

from conftest import run_cli
from jumpnet_stream import Chunk, JumpnetError, open_dataset, preprocess
from seed_reference import seed_preprocess

CASES = [("single_rows", "w"), ("single_tuples_wrinkled", "w"), ("multi_rows_wrinkled", "a"),
         ("multi_rows_wrinkled", "f"), ("multi_tuples_stream", "d"), ("multi_tuples_stream", "w")]


def read_all(path) -> Chunk:
    return Chunk.concat(list(open_dataset(path).chunks(rows=17)))


@pytest.mark.parametrize("pairing", ["jump-key", "seed"])
@pytest.mark.parametrize("ext", [".zarr", ".npz"])
@pytest.mark.parametrize("name,key", CASES)
def test_pairing_matches_the_reference(recordings, tmp_path, name, key, ext, pairing):
    rec = recordings[name]
    out = tmp_path / f"positives{ext}"
    report = preprocess(rec.npz, out, key=key, pairing=pairing)
    expected, counts = seed_preprocess(rec.npz, key, pairing=pairing)
    assert report.counts() == counts
    assert counts["paired"] > 0
    assert report.total == report.press_seen + report.release_seen + report.malformed
    got = read_all(out)
    assert len(got) == len(expected)
    keys = open_dataset(out).keys
    for i, (image, multi_hot, hold, frame) in enumerate(expected):
        assert np.array_equal(got["image"][i], np.rint(image * 255).astype(np.uint8)), "positive = press image"
        np.testing.assert_array_equal(got["keys_raw"][i], multi_hot)
        np.testing.assert_array_equal(got["hold_duration"][i], hold)
        assert got["frame_index"][i] == frame
    assert set(got["label"]) == {1.0} and set(got["phase"]) == {"press"}
    assert len(keys) == len(expected[0][1])


def test_malformed_entries_counted_by_reason(recordings, tmp_path):
    report = preprocess(recordings["single_tuples_wrinkled"].npz, tmp_path / "p.zarr")
    assert report.malformed == 4
    assert sum(report.malformed_reasons.values()) == 4
    provenance = open_dataset(tmp_path / "p.zarr").provenance[0]
    assert provenance["stage"] == "preprocess" and provenance["parameters"] == {"key": "w", "pairing": "jump-key"}
    assert provenance["counts"]["dropped"]["malformed"] == report.malformed_reasons
    assert provenance["counts"]["positives"] == report.paired + report.unmatched_final_press


def _events_file(path, events, keys=("w", "a")):
    """A recorder file written by numpy itself from (phase, multi_hot, holds, frame) tuples."""
    rng = np.random.default_rng(0)
    entries = [(rng.random((6, 5, 3), dtype=np.float32), 0.0, np.array(mh, np.float32),
                np.array(h, np.float32), phase, frame) for phase, mh, h, frame in events]
    np.savez(path, data=np.array(entries, dtype=object), keys=np.array(keys))
    return entries


HAND_WRITTEN = [
    ("release", [0, 0], [0.1, 0], 1),      # release with nothing pending: skipped
    ("press", [0, 1], [0, 0], 2),          # non-target press: ignored
    ("press", [1, 1], [0, 0.2], 3),        # jump starts
    ("press", [1, 1], [0.5, 0.7], 4),      # auto-repeat: ignored
    ("release", [1, 0], [0.6, 0.8], 5),    # 'a' let go, w still held: the seed ends the jump here (hold 0.6)
    ("release", [0, 0], [0.9, 0], 6),      # w let go: the jump ends here (hold 0.9)
    ("press", [1, 0], [0, 0], 8),          # second jump
    ("release", [0, 0], [0.25, 0], 9),
    ("press", [1, 0], [0, 0], 12),         # never released: hold NaN
]


@pytest.mark.parametrize("pairing,counts,holds", [
    ("jump-key", dict(release_seen=4, other_key_release_while_pending=1), [0.9, 0.25]),
    ("seed", dict(release_seen=4, other_key_release_while_pending=0), [0.6, 0.25]),
])
def test_hand_written_sequence(tmp_path, pairing, counts, holds):
    entries = _events_file(tmp_path / "seq.npz", HAND_WRITTEN)
    report = preprocess(tmp_path / "seq.npz", tmp_path / "out.zarr", key="w", pairing=pairing)
    assert report.counts() == dict(total=9, press_seen=5, paired=2, unmatched_final_press=1, malformed=0, **counts)
    got = read_all(tmp_path / "out.zarr")
    assert got["frame_index"].tolist() == [3, 8, 12]
    assert np.array_equal(got["image"][0], np.rint(entries[2][0] * 255).astype(np.uint8))
    np.testing.assert_allclose(got["hold_duration"][:2], [[holds[0], 0], [holds[1], 0]], rtol=1e-6)
    assert math.isnan(got["hold_duration"][2, 0]) and got["hold_duration"][2, 1] == 0
    np.testing.assert_array_equal(got["keys_raw"], [[1, 1], [1, 0], [1, 0]])
    assert got["source"].tolist() == ["seq"] * 3


def test_one_key_recordings_pair_the_same_either_way(recordings, tmp_path):
    for name in ("single_rows", "single_tuples_wrinkled"):
        rec = recordings[name]
        outs = [tmp_path / f"{name}-{pairing}.zarr" for pairing in ("jump-key", "seed")]
        reports = [preprocess(rec.npz, out, pairing=pairing) for out, pairing in zip(outs, ("jump-key", "seed"))]
        assert reports[0] == reports[1] and reports[0].paired > 5
        first, second = read_all(outs[0]), read_all(outs[1])
        for field in first.fields:
            np.testing.assert_array_equal(first[field], second[field])


def test_overlapping_keys_keep_the_jump_keys_own_hold(recordings, tmp_path):
    """With two keys, a jump is not cut short by the other key's release: every hold is the jump key's own."""
    rec = recordings["multi_tuples_stream"]  # keys w, a, d
    report = preprocess(rec.npz, tmp_path / "p.zarr", key="w")
    assert report.other_key_release_while_pending > 0
    expected, _ = seed_preprocess(rec.npz, "w", pairing="jump-key")
    seed, _ = seed_preprocess(rec.npz, "w", pairing="seed")
    got = read_all(tmp_path / "p.zarr")["hold_duration"][:, 0]
    np.testing.assert_array_equal(got, [hold[0] for _, _, hold, _ in expected])
    assert any(s[2][0] < e[2][0] for s, e in zip(seed, expected)), "the seed's rule cuts some jumps short"


def test_target_key_not_in_keys(recordings, tmp_path):
    with pytest.raises(JumpnetError, match=r"key 'q' is not in the recording's keys \(a, s, d, f\)"):
        preprocess(recordings["multi_rows_wrinkled"].npz, tmp_path / "p.zarr", key="q")
    assert not list(tmp_path.iterdir())


def test_zarr_output_opens_in_zarr_python(recordings, tmp_path):
    out = tmp_path / "p.zarr"
    report = preprocess(recordings["multi_rows_wrinkled"].npz, out, key="a")
    group = zarr.open_group(str(out), mode="r")
    n = report.paired + report.unmatched_final_press
    assert group["image"].shape == (n, 227, 227, 3) and group["image"].dtype == np.uint8
    assert group["label"].shape == (n,) and group["label"].dtype == np.float32
    assert group["keys_raw"].shape == (n, 4) and group["hold_duration"].shape == (n, 4)
    assert group["frame_index"].dtype == np.int64
    assert list(group["phase"][:]) == ["press"] * n
    assert set(group["source"][:]) == {"multi_rows"}
    assert group.attrs["keys"] == ["a", "s", "d", "f"]
    assert group["image"].chunks == (64, 227, 227, 3)


def test_npz_output_loads_like_the_seed(recordings, tmp_path):
    out = tmp_path / "p.npz"
    report = preprocess(recordings["single_rows"].npz, out)
    with np.load(out, allow_pickle=True) as z:  # the trainer's own loader, on our own output
        entries, keys = z["data"], z["keys"]
    assert entries.shape == (report.paired, 6) and entries.dtype == object
    assert keys.tolist() == ["w"]
    for entry in entries:
        assert entry[0].dtype == np.float32 and entry[0].shape == (227, 227, 3)
        assert 0.0 <= entry[0].min() and entry[0].max() <= 1.0
        assert float(entry[1]) == 1.0
        assert entry[3].flatten()[0] > 0
        assert entry[4] == "press" and isinstance(entry[5], int)


def trainer_reads(path) -> list:
    """The original trainer's access pattern, on our own output (np.load with pickles: a file we wrote)."""
    with np.load(path, allow_pickle=True) as z:
        entries = z["data"]
    for entry in entries:
        (entry[0] * 255).clip(0, 255).astype(np.uint8)
        float(entry[1]), float(entry[3]), entry[3].flatten()[0]
    return list(entries)


@pytest.mark.parametrize("name,key", [("single_rows", "w"), ("multi_rows_wrinkled", "s")])
def test_default_hold_is_the_jump_keys_scalar(recordings, tmp_path, name, key):
    out = tmp_path / "p.npz"
    preprocess(recordings[name].npz, out, key=key)
    entries = trainer_reads(out)
    assert entries and all(entry[3].shape == () and entry[3].dtype == np.float32 for entry in entries)
    expected, _ = seed_preprocess(recordings[name].npz, key, pairing="jump-key")
    keys = open_dataset(out).keys
    assert [float(entry[3]) for entry in entries] == [float(hold[keys.index(key)]) for _, _, hold, _ in expected]
    assert open_dataset(out).provenance[-1] == {"stage": "legacy npz", "parameters": {
        "hold": "scalar", "hold_key": key, "image_dtype": "float32", "image_shape": [227, 227, 3]}}
    np.testing.assert_array_equal(read_all(out)["hold_duration"], [hold for _, _, hold, _ in expected])


def test_hold_vector_is_the_seeds_layout(recordings, tmp_path):
    out = tmp_path / "p.npz"
    refuses = tuple(map(int, np.__version__.split(".")[:2])) >= (2, 4)  # float() of a 1-element vector
    with pytest.warns(UserWarning, match="could not read its first entry") if refuses else warnings.catch_warnings():
        preprocess(recordings["single_rows"].npz, out, hold="vector")
    with np.load(out, allow_pickle=True) as z:
        entries = z["data"]
    assert all(entry[3].shape == (1,) and entry[3].flatten()[0] > 0 for entry in entries)


def test_cli_json(recordings, tmp_path):
    rec = recordings["multi_tuples_stream"]
    result = run_cli("preprocess", rec.npz, "-o", str(tmp_path / "p.zarr"), "--key", "a", "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts == seed_preprocess(rec.npz, "a")[1]
    assert len(open_dataset(tmp_path / "p.zarr")) == counts["paired"] + counts["unmatched_final_press"]


def test_cli_human_summary(recordings, tmp_path):
    result = run_cli("preprocess", recordings["single_tuples_wrinkled"].npz, "-o", str(tmp_path / "p.npz"))
    assert result.returncode == 0, result.stderr
    _, counts = seed_preprocess(recordings["single_tuples_wrinkled"].npz, "w")
    assert f"paired (positives){counts['paired']:>14}" in result.stdout
    assert f"malformed (skipped){counts['malformed']:>13}" in result.stdout
    assert (tmp_path / "p.npz").is_file()


@pytest.mark.parametrize("setup,expected", [
    ("missing", "no such file"),
    ("not_zip", "not an npz file"),
    ("no_keys", "npz has no 'keys' array"),
    ("bad_key", "key 'z' is not in the recording's keys (w)"),
    ("bad_ext", "unknown dataset format '.csv'"),
    ("exists", "output exists (the overwrite option replaces it)"),
])
def test_cli_errors_are_one_line_and_leave_nothing(recordings, tmp_path, setup, expected):
    raw, out, args = recordings["single_rows"].npz, tmp_path / "p.zarr", []
    if setup == "missing":
        raw = str(tmp_path / "nope.npz")
    elif setup == "not_zip":
        raw = tmp_path / "text.npz"
        raw.write_text("hello")
    elif setup == "no_keys":
        raw = tmp_path / "nokeys.npz"
        np.savez(raw, data=np.zeros(3))
    elif setup == "bad_key":
        args = ["--key", "z"]
    elif setup == "bad_ext":
        out = tmp_path / "p.csv"
    elif setup == "exists":
        out.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("preprocess", str(raw), "-o", str(out), *args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_overwrite_replaces(recordings, tmp_path):
    out = tmp_path / "p.zarr"
    preprocess(recordings["single_rows"].npz, out)
    report = preprocess(recordings["multi_rows_wrinkled"].npz, out, key="a", overwrite=True)
    assert len(open_dataset(out)) == report.paired + report.unmatched_final_press
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]


def test_final_press_completing_a_chunk_is_kept(tmp_path):
    """63 jumps and a final unreleased press fill exactly one 64-row chunk: none may be lost."""
    events = []
    for jump in range(63):
        events += [("press", [1, 0], [0, 0], 3 * jump), ("release", [0, 0], [0.2, 0], 3 * jump + 1)]
    events.append(("press", [1, 0], [0, 0], 500))
    _events_file(tmp_path / "edge.npz", events)
    report = preprocess(tmp_path / "edge.npz", tmp_path / "out.zarr", key="w")
    assert (report.paired, report.unmatched_final_press) == (63, 1)
    got = read_all(tmp_path / "out.zarr")
    assert len(got) == 64 and got["frame_index"][-1] == 500 and math.isnan(got["hold_duration"][-1, 0])
