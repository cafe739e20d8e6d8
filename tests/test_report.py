"""A build's report (``write_report``: DIR/report.html) opened from disk in a real browser with the network
off: every plot rendered (SVG with a size and shapes), the contact sheet's images decoded, no console error,
and nothing in it that would be fetched; the report's peak memory flat in the set's length."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from jumpnet_stream.chunk import Chunk
from jumpnet_stream.errors import JumpnetError
from jumpnet_stream.formats import create_dataset, open_dataset
from jumpnet_stream.formats.zarr_store import ZarrOptions
from jumpnet_stream.sampling import choose
from jumpnet_stream.viewer import write_report
from jumpnet_stream.viewer.figures import figures, tally
from jumpnet_stream.viewer.report import SEED, SHEET
from jumpnet_stream.viewer.source import open_source
from test_viewer import Browser, demo_build, keep_screenshot
from tools.measure import run_peak_rss

FIGURES = ["fig-balance", "fig-holds", "fig-timeline", "fig-audit", "fig-accounting"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def test_the_report_renders_offline_from_disk(tmp_path_factory, browser, tmp_path):
    build = demo_build(tmp_path_factory)
    path = write_report(build)
    assert path == build / "report.html"
    text = path.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:|#)|url\((?!data:)|@import""", text)  # all inline

    browser.call("Network.enable")
    browser.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
                 uploadThroughput=-1)
    browser.goto(path.as_uri())
    charts = browser.run("[...document.querySelectorAll('section.figure')].map(s => {"
                         "const box = s.querySelector('svg').getBoundingClientRect();"
                         "return [s.id, box.width, box.height, s.querySelectorAll('svg rect').length]})")
    assert [chart[0] for chart in charts] == FIGURES
    assert all(width > 300 and height > 100 and shapes > 2 for _, width, height, shapes in charts), charts

    dataset = open_dataset(build / "dataset.zarr")
    small = dataset.columns(["label", "augmented"])
    kinds = {"original positives": (small["label"] == 1) & ~small["augmented"],
             "augmented copies": (small["label"] == 1) & small["augmented"], "negatives": small["label"] == 0}
    expected = sum(min(count, int(np.count_nonzero(kinds[kind]))) for kind, count in SHEET)
    browser.wait_for("[...document.images].every(i => i.complete)")
    sizes = browser.run("[...document.querySelectorAll('#sheet img')].map(i => i.naturalWidth)")
    assert len(sizes) == expected and all(size > 0 for size in sizes)
    page = browser.run("document.body.innerText")
    assert f"samples\t{len(dataset)}" in page and "The build's accounting" in page
    split = dataset.column("split")
    for name in np.unique(split):
        positives, negatives = (np.count_nonzero((split == name) & (small["label"] == c)) for c in (1, 0))
        assert f"split {name}\t{positives} positives, {negatives} negatives" in page
    assert browser.errors() == []
    browser.screenshot(tmp_path / "report.png")
    keep_screenshot(tmp_path / "report.png", "report.png")


def test_the_report_counts_a_block_at_a_time_what_the_viewer_counts_whole(tmp_path_factory):
    build = demo_build(tmp_path_factory)
    whole, blocks = open_source(build), open_source(build, whole=False)
    counted = tally(blocks, SHEET, SEED)
    assert "_whole" not in blocks.__dict__  # nothing read whole
    assert figures(blocks, None, counted) == figures(whole, None)
    assert [blocks.summary(int(p)) for _, positions in counted.picks for p in positions] \
        == [whole.summary(int(p)) for _, positions in counted.picks for p in positions]
    label, augmented = whole.label, whole.small["augmented"]
    members = {"original positives": (label == 1) & ~augmented, "augmented copies": (label == 1) & augmented,
               "negatives": label == 0}
    assert [kind for kind, _ in counted.picks] == [kind for kind, _ in SHEET]
    for kind, positions in counted.picks:  # the seeded choice among each kind's members, as read whole
        candidates = np.flatnonzero(members[kind])
        assert positions.tolist() == candidates[choose(len(candidates), dict(SHEET)[kind], SEED)].tolist()


def test_only_a_build_folder_has_a_report(tmp_path):
    with pytest.raises(JumpnetError, match="is not a build folder"):
        write_report(tmp_path)


def _tiny_build(folder, samples: int):
    """A build folder of ``samples`` 2x2 images: a third positives (half of them augmented copies), two
    splits, two recordings, a frame each; its manifest keeps the shortcut audit, as a build's does."""
    folder.mkdir()
    with create_dataset(folder / "dataset.zarr", ["w", "a"], image_shape=(2, 2, 3),
                        options=ZarrOptions(rechunk=4096)) as writer:
        for start in range(0, samples, 8192):
            n = min(8192, samples - start)
            at = np.arange(start, start + n)
            positive = at % 3 == 0
            writer.write(Chunk({
                "image": np.full((n, 2, 2, 3), 7, np.uint8), "label": positive.astype(np.float32),
                "keys_raw": np.stack([positive, np.zeros(n, bool)], 1).astype(np.float32),
                "hold_duration": np.stack([np.where(positive, at % 97 / 100, 0), np.zeros(n)], 1).astype(np.float32),
                "phase": np.where(positive, "press", "none"), "frame_index": at // 2,
                "source": np.where(at % 2, "b", "a"),
                "augmented": positive & (at % 6 == 3), "copy": (positive & (at % 6 == 3)).astype(np.int64),
                "split": np.where(at % 10 == 0, "val", "train")}))
        writer.provenance = []
    audit = {"auc": {}, "positives": 0, "negatives": 0}
    (folder / "manifest.json").write_text(json.dumps({"tool": "test", "audit": audit}))
    return folder


def test_a_pages_summaries_are_read_a_stored_block_at_a_time(tmp_path):
    folder = _tiny_build(tmp_path / "set", 20_000)  # its small fields in blocks of 4096 rows
    whole, blocks = open_source(folder), open_source(folder, whole=False)
    reads = []
    column_rows = blocks.reader.column_rows
    blocks.reader.column_rows = lambda names, start, stop: reads.append(start) or column_rows(names, start, stop)
    positions = [19_999, 5, 4096, 4095, 12_000, 5]  # four blocks, out of order, one position twice
    assert blocks.summaries(positions) == [whole.summary(p) for p in positions]
    assert sorted(reads) == [0, 4096, 8192, 16384] and "_whole" not in blocks.__dict__
    assert whole.summaries(positions) == [whole.summary(p) for p in positions]


def test_the_reports_peak_memory_is_flat_in_the_sets_length(tmp_path):
    peaks = {}
    for samples in (20_000, 400_000):  # the small fields read whole made the larger one's peak 63 MB higher
        folder = _tiny_build(tmp_path / str(samples), samples)
        code, peaks[samples], _, err = run_peak_rss(
            [sys.executable, "-c", "import sys; from jumpnet_stream.viewer import write_report; "
                                   "write_report(sys.argv[1])", str(folder)])
        assert code == 0, err
        text = (folder / "report.html").read_text()
        assert f"<th>samples</th><td>{samples}</td>" in text
        positives, val, val_positives = (len(range(0, samples, step)) for step in (3, 10, 30))
        assert f"<th>split train</th><td>{positives - val_positives} positives, " \
               f"{samples - val - positives + val_positives} negatives</td>" in text
        assert f"<th>split val</th><td>{val_positives} positives, {val - val_positives} negatives</td>" in text
        assert text.count('<div class="cell') == sum(count for _, count in SHEET)
    assert peaks[400_000] - peaks[20_000] < 15, peaks
