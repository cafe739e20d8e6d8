"""Progress bars: on stderr when it is a terminal, never with --quiet, never into pipes."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from jumpnet_stream import open_dataset, preprocess


@pytest.fixture(scope="module")
def game_positives(recordings, tmp_path_factory):
    rec = recordings["with_video"]
    positives = tmp_path_factory.mktemp("progress") / "positives.zarr"
    preprocess(rec.npz, positives)
    return rec, positives


def _stderr_on_a_terminal(args):
    """Run the CLI with stderr attached to a pseudo-terminal; return what the terminal showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal has a size
    proc = subprocess.Popen([sys.executable, "-m", "jumpnet_stream", *args], stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        shown += data
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0
    return shown.decode(errors="replace")


def test_bar_on_a_terminal(game_positives, tmp_path):
    rec, positives = game_positives
    shown = _stderr_on_a_terminal(["negatives", rec.video, "-o", str(tmp_path / "n.zarr"),
                                   "--positives", str(positives)])
    assert "negatives game_120000.mp4" in shown and "frame/s" in shown and f"/{rec.frames}" in shown


def test_merge_bar_counts_the_samples_once(game_positives, tmp_path):
    """The shuffled merge passes over the samples twice (spool, then write): each pass counts to N, not 2N."""
    _, positives = game_positives
    samples = 2 * len(open_dataset(positives))
    shown = _stderr_on_a_terminal(["merge", str(positives), str(positives), "-o", str(tmp_path / "m.zarr"),
                                   "--shuffle"])
    assert f"/{samples} " in shown and f"/{2 * samples} " not in shown
    assert "merge (shuffled)" in shown


def test_quiet_and_pipes_show_nothing(game_positives, tmp_path):
    rec, positives = game_positives
    assert _stderr_on_a_terminal(["negatives", rec.video, "-o", str(tmp_path / "q.zarr"),
                                  "--positives", str(positives), "--quiet"]) == ""
    piped = subprocess.run([sys.executable, "-m", "jumpnet_stream", "negatives", rec.video, "-o",
                            str(tmp_path / "p.zarr"), "--positives", str(positives)], capture_output=True, text=True)
    assert piped.returncode == 0 and piped.stderr == ""
