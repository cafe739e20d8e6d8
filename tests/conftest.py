"""Shared fixtures: real synthetic recordings written by the project's generator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from jumpnet_stream.synth import make_recording  # noqa: E402

# Property tests: CI runs the "ci" profile, a fixed seed (the same examples every run: nothing flaky reaches
# it); locally, HYPOTHESIS_PROFILE=wide draws new examples on every run, five times as many.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("wide", derandomize=False, print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """A property test's example count for the loaded profile."""
    return n * 5 if PROFILE == "wide" else n


def run_cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    """The real command line, as a subprocess."""
    return subprocess.run([sys.executable, "-m", "jumpnet_stream", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="session")
def recordings(tmp_path_factory):
    """Keylogs with every wrinkle, in both layouts, single- and multi-key, written both ways."""
    out = tmp_path_factory.mktemp("recordings")
    return {
        "single_rows": make_recording(out, name="single_rows", seconds=20, keys=("w",), seed=1,
                                      writer="numpy", video=False),
        "single_tuples_wrinkled": make_recording(out, name="single_tuples", seconds=20, keys=("w",), seed=2,
                                                 layout="tuples", writer="numpy", wrinkles=True, old_keys=True,
                                                 malformed=4, video=False),
        "multi_rows_wrinkled": make_recording(out, name="multi_rows", seconds=25, keys=("a", "s", "d", "f"),
                                              seed=3, writer="numpy", wrinkles=True, video=False),
        "multi_tuples_stream": make_recording(out, name="multi_tuples", seconds=25, keys=("w", "a", "d"),
                                              seed=4, layout="tuples", writer="stream", wrinkles=True,
                                              malformed=3, video=False),
        "with_video": make_recording(out, name="game", seconds=8, keys=("w", "a"), seed=5, writer="numpy"),
    }


@pytest.fixture(scope="session")
def history_build(tmp_path_factory):
    """A real build with a validation split and frame history (3 frames, 2 apart), and its recording."""
    from jumpnet_stream.build import BuildOptions, Session, build

    root = tmp_path_factory.mktemp("history_build")
    rec = make_recording(root / "in", name="play", seconds=24, keys=("w", "a"), seed=7)
    build([Session(rec.npz, rec.video)], root / "set", BuildOptions(negatives=150, val_fraction=0.25, history=3,
                                                                    history_stride=2, seed=3))
    return root, rec


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """The numba kernels compiled (and cached beside the package) before any test measures a process's memory:
    a process that compiles one pays LLVM's memory once, which is not what the peak-memory checks are about."""
    import numpy as np

    from jumpnet_stream.kernels import augment_images, resize_rgb

    frame = np.zeros((454, 454, 3), np.uint8)
    resize_rgb(frame, (227, 227))                            # the recorder's 2x preview: halved
    resize_rgb(np.zeros((480, 640, 3), np.uint8), (227, 227))  # any other size: the area resize
    augment_images(np.zeros((2, 8, 8, 3), np.uint8), np.arange(2), 1, 0)
