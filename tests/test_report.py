"""A build's report (``write_report``: DIR/report.html) opened from disk in a real browser with the network
off: every plot rendered (SVG with a size and shapes), the contact sheet's images decoded, no console error,
and nothing in it that would be fetched."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jumpnet_stream.errors import JumpnetError
from jumpnet_stream.formats import open_dataset
from jumpnet_stream.viewer import write_report
from jumpnet_stream.viewer.report import SHEET
from test_viewer import Browser, demo_build, keep_screenshot

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
    assert browser.errors() == []
    browser.screenshot(tmp_path / "report.png")
    keep_screenshot(tmp_path / "report.png", "report.png")


def test_only_a_build_folder_has_a_report(tmp_path):
    with pytest.raises(JumpnetError, match="is not a build folder"):
        write_report(tmp_path)
