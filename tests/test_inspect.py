"""inspect: the summary and the contact sheet of real datasets, checked against the datasets themselves."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from jumpnet_stream import Chunk, JumpnetError, create_dataset, open_dataset, preprocess
from jumpnet_stream.stages.export import export
from jumpnet_stream.inspection import (BORDER, CAPTION, GAP, NEGATIVE_BGR, POSITIVE_BGR, TITLE, contact_sheet,
                                       describe)
from jumpnet_stream.stages.merge import merge
from jumpnet_stream.quality import AuditReport
from jumpnet_stream.stages.negatives import negatives
from jumpnet_stream.sampling import choose


@pytest.fixture(scope="module")
def sets(recordings, tmp_path_factory):
    """Positives then negatives (unshuffled, over 64 rows: two image chunks), and a shuffled copy."""
    folder = tmp_path_factory.mktemp("inspect")
    game = recordings["with_video"]
    preprocess(game.npz, folder / "pos.zarr", key="w")
    negatives(game.video, folder / "neg.zarr", positives=folder / "pos.zarr", keep=100)
    merge([folder / "pos.zarr", folder / "neg.zarr"], folder / "plain.zarr")
    merge([folder / "pos.zarr", folder / "neg.zarr"], folder / "shuffled.zarr", shuffle=True, seed=42)
    return folder


def read_all(path) -> Chunk:
    return Chunk.concat(list(open_dataset(path).chunks()))


def test_summary_equals_the_dataset(sets):
    path = sets / "plain.zarr"
    data = read_all(path)
    summary = describe(path, n=4)
    assert (summary.format, summary.samples, summary.keys) == ("zarr", len(data), ("a", "w"))
    assert (summary.image_shape, summary.image_dtype) == ((227, 227, 3), "uint8")
    positive, negative = data["label"] == 1, data["label"] == 0
    assert 0 < positive.sum() < negative.sum() and positive.sum() + negative.sum() == len(data)
    assert (summary.positives, summary.negatives, summary.other_labels) == (positive.sum(), negative.sum(), 0)
    holds = data["hold_duration"][positive][:, 1].astype(np.float64)  # preprocess put the 'w' holds in slot 1
    assert summary.hold.released == len(holds) and summary.hold.unreleased == 0
    np.testing.assert_allclose([summary.hold.min, summary.hold.max, summary.hold.mean, summary.hold.std],
                               [holds.min(), holds.max(), holds.mean(), holds.std()])
    assert len(summary.previews) == 4
    for i, p in enumerate(summary.previews):
        assert p.index == i and p.image_shape == data["image"][i].shape and p.phase == data["phase"][i]
        assert (p.label, p.frame_index) == (data["label"][i], data["frame_index"][i])
        assert p.keys_raw == tuple(data["keys_raw"][i]) and p.hold_duration == tuple(data["hold_duration"][i])

    counts = json.loads(json.dumps(summary.counts(), allow_nan=False))
    assert counts["samples"] == len(data) and counts["keys"] == ["a", "w"]
    assert counts["positives"] == positive.sum() and counts["positive_fraction"] == pytest.approx(positive.mean())
    assert counts["negative_fraction"] == pytest.approx(negative.mean())
    assert counts["hold"]["mean"] == pytest.approx(holds.mean())
    assert [p["frame_index"] for p in counts["previews"]] == data["frame_index"][:4].tolist()

    text = summary.text()
    assert f"samples                     {len(data)}" in text and "227x227x3 uint8" in text
    assert f"positives (label 1)         {positive.sum():<8}{positive.mean():6.1%}" in text
    # title, 10 rows (7 counts, augmented copies, one split, frame history), the audit and its warnings, table title and head, 4 rows
    audit_lines = AuditReport(**summary.audit).lines()
    assert "first 4:" in text and len(text.splitlines()) == 1 + 10 + len(audit_lines) + 1 + 1 + 4
    assert audit_lines[0] in text and "  frame history               none" in text
    assert summary.splits == {"train": {"positives": int(positive.sum()), "negatives": int(negative.sum())}}
    assert set(summary.audit["auc"]) == {"sharpness", "brightness", "label_region"}


def test_every_format_gives_the_same_summary(sets, tmp_path):
    path = sets / "shuffled.zarr"
    outputs = {"legacy.npz": ({}, "npz legacy", "float32"),
               "columnar.npz": ({"layout": "columnar"}, "npz columnar", "uint8"),
               "data.h5": ({}, "h5", "uint8"), "f32.h5": ({"image_dtype": "float32"}, "h5", "float32")}
    reference = describe(path).counts()
    assert {p["label"] for p in reference["previews"]} == {0.0, 1.0}  # shuffled: both classes up front
    for name, (options, format_name, dtype) in outputs.items():
        export(path, tmp_path / name, **options)
        summary = describe(tmp_path / name)
        assert (summary.format, summary.image_dtype) == (format_name, dtype)
        counts = summary.counts()
        for key in ("path", "format", "image_dtype"):
            counts.pop(key), reference.pop(key, None)
        assert counts == reference, name


def test_multi_key_holds_and_unreleased_presses(recordings, tmp_path):
    """After a merge the jump key's slot differs between positives; a NaN hold is counted, not averaged."""
    preprocess(recordings["single_rows"].npz, tmp_path / "w.zarr", key="w")
    preprocess(recordings["multi_rows_wrinkled"].npz, tmp_path / "asdf.npz", key="s")
    merge([tmp_path / "w.zarr", tmp_path / "asdf.npz"], tmp_path / "m.zarr")
    data = read_all(tmp_path / "m.zarr")
    n_w = len(open_dataset(tmp_path / "w.zarr"))
    union = ["a", "d", "f", "s", "w"]
    holds = np.concatenate([data["hold_duration"][:n_w, union.index("w")],
                            data["hold_duration"][n_w:, union.index("s")]]).astype(np.float64)
    holds[7] = np.nan  # a press never released, written by the real writer
    with create_dataset(tmp_path / "nan.zarr", union) as writer:
        column = data["hold_duration"].copy()
        column[7, union.index("w")] = np.nan
        writer.write(Chunk({**data.columns, "hold_duration": column}))
    summary = describe(tmp_path / "nan.zarr", n=8)
    released = holds[~np.isnan(holds)]
    assert (summary.positives, summary.hold.released, summary.hold.unreleased) == (len(data), len(released), 1)
    np.testing.assert_allclose([summary.hold.min, summary.hold.max, summary.hold.mean, summary.hold.std],
                               [released.min(), released.max(), released.mean(), released.std()], rtol=1e-6)
    assert np.isnan(summary.previews[7].hold_duration[union.index("w")])
    counts = json.loads(json.dumps(summary.counts(), allow_nan=False))  # NaN becomes null
    assert counts["previews"][7]["hold_duration"][union.index("w")] is None
    assert "never released (hold NaN)   1" in summary.text() and "nan" in summary.text()


def test_only_the_first_rows_images_are_read(sets, tmp_path):
    """Every image chunk after the first is garbage: describe(n <= 64) still works, a full read fails."""
    path = tmp_path / "broken.zarr"
    shutil.copytree(sets / "plain.zarr", path)
    chunk_files = sorted(f for f in os.listdir(path / "image") if f.startswith("c."))
    assert len(chunk_files) >= 2
    for name in chunk_files[1:]:
        (path / "image" / name).write_bytes(b"not zstd")
    summary = describe(path, n=5, shortcuts=False)  # the audit reads images all through the set
    assert summary.samples == len(open_dataset(sets / "plain.zarr")) and len(summary.previews) == 5
    with pytest.raises(JumpnetError, match="image chunk 1 is damaged"):
        read_all(path)


def test_empty_dataset_and_bad_arguments(sets, tmp_path):
    with create_dataset(tmp_path / "none.npz", ["w"]):
        pass
    summary = describe(tmp_path / "none.npz")
    assert (summary.samples, summary.positives, summary.image_dtype, summary.previews) == (0, 0, None, ())
    assert summary.counts()["positive_fraction"] is None and summary.hold.mean is None
    assert "samples                     0" in summary.text() and "first" not in summary.text()
    with pytest.raises(JumpnetError, match="-n must be 0 or more"):
        describe(sets / "pos.zarr", n=-1)
    assert describe(sets / "pos.zarr", n=0).previews == ()
    with pytest.raises(JumpnetError, match="no such zarr store"):
        describe(tmp_path / "missing.zarr")
    with pytest.raises(JumpnetError, match="no samples to draw"):
        contact_sheet(tmp_path / "none.npz", tmp_path / "none.png")
    assert sorted(os.listdir(tmp_path)) == ["none.npz"]


def cell(index: int, columns: int, tile: int) -> tuple[int, int]:
    """Top-left pixel (x, y) of a cell's border, from the documented geometry."""
    row, column = divmod(index, columns)
    return GAP + column * (tile + 2 * BORDER + GAP), TITLE + GAP + row * (tile + 2 * BORDER + CAPTION + GAP)


def test_contact_sheet_grid_colours_and_pixels(sets, tmp_path):
    path, out = sets / "shuffled.zarr", tmp_path / "sheet.png"
    data = read_all(path)
    report = contact_sheet(path, out)
    assert report.positions == tuple(range(24)) and (report.columns, report.rows, report.tile) == (6, 4, 160)
    sheet = cv2.imread(str(out))
    assert sheet.shape == (report.height, report.width, 3)
    assert report.width == GAP + 6 * (160 + 2 * BORDER + GAP)
    assert report.height == TITLE + GAP + 4 * (160 + 2 * BORDER + CAPTION + GAP)
    labels = data["label"][:24]
    assert (report.positives, report.negatives) == ((labels == 1).sum(), (labels == 0).sum())
    assert report.positives and report.negatives
    for i, label in enumerate(labels):
        x, y = cell(i, 6, 160)
        want = POSITIVE_BGR if label == 1 else NEGATIVE_BGR
        for px, py in ((x, y), (x + BORDER - 1, y + 80), (x + 160 + 2 * BORDER - 1, y + 160 + 2 * BORDER - 1)):
            assert tuple(sheet[py, px]) == want, (i, px, py)
    assert POSITIVE_BGR != NEGATIVE_BGR
    assert sorted(os.listdir(tmp_path)) == ["sheet.png"]  # no temporary sibling left

    # at the images' own size the tile is the image itself, RGB turned into OpenCV's BGR
    report = contact_sheet(path, tmp_path / "exact.png", count=3, columns=2, tile=227)
    sheet = cv2.imread(str(tmp_path / "exact.png"))
    assert (report.columns, report.rows) == (2, 2) and sheet.shape == (report.height, report.width, 3)
    for i in range(3):
        x, y = cell(i, 2, 227)
        tile = sheet[y + BORDER:y + BORDER + 227, x + BORDER:x + BORDER + 227]
        np.testing.assert_array_equal(tile, data["image"][i][..., ::-1])


def test_contact_sheet_picks(sets, tmp_path):
    """An unshuffled positives-then-negatives set: 'first' shows positives only, 'spread' both."""
    path = sets / "plain.zarr"
    data = read_all(path)
    n_pos = int((data["label"] == 1).sum())
    first = contact_sheet(path, tmp_path / "first.png", count=n_pos)
    assert (first.positives, first.negatives) == (n_pos, 0)
    spread = contact_sheet(path, tmp_path / "spread.png", count=12, pick="spread")
    assert spread.positions == tuple(np.linspace(0, len(data) - 1, 12).round().astype(int).tolist())
    assert spread.positives and spread.negatives and spread.positions[-1] == len(data) - 1
    random = contact_sheet(path, tmp_path / "random.png", count=10, pick="random", seed=7)
    assert random.positions == tuple(choose(len(data), 10, 7).tolist())
    assert random.positives + random.negatives == 10
    everything = contact_sheet(path, tmp_path / "all.png", count=10_000, pick="spread")
    assert everything.positions == tuple(range(len(data))) and everything.rows == -(-len(data) // 6)


def test_contact_sheet_refusals(sets, tmp_path):
    path, out = sets / "pos.zarr", tmp_path / "sheet.png"
    contact_sheet(path, out, count=2)
    before = out.read_bytes()
    with pytest.raises(JumpnetError, match="output exists"):
        contact_sheet(path, out, count=3)
    assert out.read_bytes() == before
    report = contact_sheet(path, out, count=3, overwrite=True)
    assert cv2.imread(str(out)).shape == (report.height, report.width, 3) and report.columns == 3
    for name in ("sheet.jpg", "sheet", "sheet.png.tmp"):
        with pytest.raises(JumpnetError, match="PNG: name it OUT.png"):
            contact_sheet(path, tmp_path / name)
    with pytest.raises(JumpnetError, match="does not exist"):
        contact_sheet(path, tmp_path / "nowhere" / "sheet.png")
    with pytest.raises(JumpnetError, match="pick must be one of"):
        contact_sheet(path, tmp_path / "x.png", pick="best")
    with pytest.raises(JumpnetError, match="columns must be between 1 and 100"):
        contact_sheet(path, tmp_path / "x.png", columns=0)
    with pytest.raises(JumpnetError, match="no such zarr store"):
        contact_sheet(tmp_path / "missing.zarr", tmp_path / "x.png")
    assert sorted(os.listdir(tmp_path)) == ["sheet.png"]


def test_a_keylog_is_described_as_a_keylog(recordings, tmp_path):
    """inspect on a recorder keylog counts its events per key; other commands refuse it as a dataset."""
    from conftest import run_cli
    from seed_reference import seed_preprocess
    rec = recordings["multi_tuples_stream"]  # keys w, a, d; wrinkled; 3 malformed entries
    summary = describe(rec.npz)
    assert summary.format == "recorder keylog" and summary.keys == ["w", "a", "d"]
    assert summary.entries == summary.events + summary.malformed and summary.malformed == 3
    assert summary.events == summary.presses + summary.releases
    _, counts = seed_preprocess(rec.npz, "w")
    w = summary.per_key["w"]
    assert w.went_down == counts["paired"] + counts["unmatched_final_press"]
    assert sum(s.releases for s in summary.per_key.values()) == summary.releases
    assert summary.presses == summary.repeat_presses + sum(s.went_down for s in summary.per_key.values())
    assert 0 < w.hold_stats()["min"] <= w.hold_stats()["mean"] <= w.hold_stats()["max"]
    shown = run_cli("inspect", rec.npz, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["per_key"]["w"]["went_down"] == w.went_down
    text = run_cli("inspect", rec.npz).stdout
    assert "(recorder keylog: events, not samples" in text and "presses (jumps)" in text
    refused = run_cli("export", rec.npz, "-o", str(tmp_path / "x.zarr"))
    assert refused.returncode == 1 and "is a recorder keylog (events), not a dataset" in refused.stderr


def test_files_of_the_original_scripts_hold_only_data(sets, tmp_path):
    """The seed's own outputs (PAug.npz, final.npz) hold only 'data': their keys are key0.. or --keys."""
    from conftest import run_cli
    data = read_all(sets / "plain.zarr").take(slice(0, 10))
    entries = np.empty((10, 6), dtype=object)
    for i in range(10):
        entries[i] = (data["image"][i] / np.float32(255), float(data["label"][i]), data["keys_raw"][i],
                      data["hold_duration"][i], "press", int(data["frame_index"][i]))
    np.savez(tmp_path / "final.npz", data=entries)  # as the seed's Data_merge_final.py writes it
    assert describe(tmp_path / "final.npz").keys == ("key0", "key1")
    assert describe(tmp_path / "final.npz", keys=["a", "w"]).keys == ("a", "w")
    result = run_cli("export", str(tmp_path / "final.npz"), "-o", str(tmp_path / "back.zarr"), "--keys", "a,w")
    assert result.returncode == 0, result.stderr
    back = read_all(tmp_path / "back.zarr")
    assert open_dataset(tmp_path / "back.zarr").keys == ["a", "w"]
    for name in ("image", "label", "keys_raw", "hold_duration", "frame_index"):
        np.testing.assert_array_equal(back[name], data[name], err_msg=name)
    merged = run_cli("merge", str(tmp_path / "final.npz"), str(sets / "pos.zarr"), "-o", str(tmp_path / "m.zarr"),
                     "--keys", "a,w", "--json")
    assert merged.returncode == 0, merged.stderr
    assert json.loads(merged.stdout)["keys"] == ["a", "w"]
