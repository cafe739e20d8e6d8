"""Bounded memory is a feature: preprocess's peak RSS must not grow with the keylog's length."""

from __future__ import annotations

import os
import sys

from jumpnet_stream.synth import make_recording
from tools.measure import run_peak_rss


def test_preprocess_peak_rss_flat_in_keylog_length(tmp_path):
    peaks = {}
    for seconds in (30, 120):  # about 100 MB and 400 MB keylogs
        rec = make_recording(tmp_path, name=f"k{seconds}", seconds=seconds, keys=("w", "a"), seed=7, video=False)
        size_mb = os.path.getsize(rec.npz) / 1e6
        code, peak, out, err = run_peak_rss([sys.executable, "-m", "jumpnet_stream", "preprocess", rec.npz,
                                             "-o", str(tmp_path / f"p{seconds}.zarr"), "--json"])
        assert code == 0, err
        peaks[seconds] = (size_mb, peak)
        os.remove(rec.npz)
    (small_mb, small_peak), (big_mb, big_peak) = peaks[30], peaks[120]
    assert big_mb > 3 * small_mb
    # whole loading would add the keylog's size (300+ MB); streaming adds at most the memo budget's noise
    assert big_peak - small_peak < 40, peaks
    assert big_peak < 300, peaks
