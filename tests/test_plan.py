"""The build as a plan (issue 13): the planner's stage specs are plain data that another process runs to
the same bytes, and outputs are named by what decides them, so a recording added in front of another
leaves the other's outputs as they were."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import sys
import threading
import time
from dataclasses import asdict

import pytest

from jumpnet_stream import open_dataset
from jumpnet_stream.build import BuildOptions, Session, build
from jumpnet_stream.build.execute import eligible, run_spec, survey
from jumpnet_stream.build.plan import plan_frames, plan_positives
from jumpnet_stream.build.split import SPLITS, choose_negatives, plan_split
from jumpnet_stream.quality import audit
from jumpnet_stream.synth import make_recording


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Two short recordings of the recorder's kind: alpha and beta."""
    folder = tmp_path_factory.mktemp("plan_inputs")
    made = [make_recording(folder, name=name, seconds=10, keys=("w", "a"), seed=seed)
            for name, seed in (("alpha", 1), ("beta", 2))]
    return [Session(r.npz, r.video) for r in made]


def contents(path: str) -> dict[str, tuple[str, int]]:
    """Every file below ``path`` (or ``path`` itself): its sha256 and its modification time."""
    files = [path] if os.path.isfile(path) else \
        [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
    return {os.path.relpath(f, path): (hashlib.sha256(open(f, "rb").read()).hexdigest(), os.stat(f).st_mtime_ns)
            for f in sorted(files)}


def same_bytes(a: dict[str, tuple[str, int]], b: dict[str, tuple[str, int]]) -> bool:
    return {name: digest for name, (digest, _) in a.items()} == {name: digest for name, (digest, _) in b.items()}


def _run_specs(specs: list, folder: str) -> list[dict]:
    """In a process of its own: the specs run in order into ``folder``, their counts."""
    return [run_spec(spec, folder) for spec in specs]


def test_specs_are_plain_data_that_another_process_runs_to_the_same_bytes(sessions, tmp_path):
    """A recording's two stages (its positives, then its frames) planned as ``build`` plans them, sent
    pickled to a spawned process: the same counts and every output file byte for byte as in this one."""
    options = BuildOptions(negatives=30, val_fraction=0.3, seed=5)
    folder, kept = str(tmp_path / "set"), str(tmp_path / "in-process")
    os.makedirs(os.path.join(folder, "work"))  # a build's folder, as the executor makes it
    positives = plan_positives(sessions[:1], options)
    counts_here = [run_spec(positives[0], folder)]
    surveys = [survey(sessions[0].video, os.path.join(folder, positives[0].output), sessions[0].raw, options.radius)]
    zones = plan_split(surveys, options.val_fraction, options.seed, options.radius)["zones"]
    pools = [{name: eligible(surveys[0], zones[0][name], options.radius, options.held_frames) for name in SPLITS}]
    chosen = choose_negatives(pools, surveys, zones, total=options.negatives, ratio=None, multiplier=options.multiplier,
                              keep_unreleased=options.keep_unreleased, seed=options.seed)
    specs = positives + plan_frames(sessions[:1], positives, surveys, zones, chosen, options)
    counts_here.append(run_spec(specs[1], folder))
    assert sum(counts_here[1]["written"].values()) > 0, "the frames stage writes negatives from the video"
    for spec in specs:
        assert pickle.loads(pickle.dumps(spec)) == spec
        json.dumps(asdict(spec))  # raises on anything but JSON's types: what any scheduler carries as it is

    os.rename(folder, kept)  # the same folder again, empty (outputs record their inputs' paths)
    os.makedirs(os.path.join(folder, "work"))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        counts_there = pool.apply(_run_specs, (specs, folder))
    assert counts_there == counts_here
    outputs = [output for spec in specs for output in spec.outputs]
    assert len(outputs) == 3  # the positives; the frames' negatives and positives
    for output in outputs:
        mine, theirs = contents(os.path.join(kept, output)), contents(os.path.join(folder, output))
        assert mine and same_bytes(mine, theirs), output


def test_a_recording_added_in_front_leaves_the_others_outputs_as_they_were(sessions, tmp_path):
    """beta built alone, then alpha and beta: beta's stages are reused, their outputs keep their names and
    every byte (nor are they rewritten). No negatives: they are chosen over all recordings together, so with
    some, a new recording rightly changes the others' choice (and so their frames stage)."""
    alpha, beta = sessions
    options = BuildOptions(negatives=0, multiplier=0, legacy=False)
    folder = str(tmp_path / "set")
    first = build([beta], folder, options)
    work = os.path.join(folder, "work")
    before = {name: contents(os.path.join(work, name)) for name in os.listdir(work)}
    beta_outputs = {name for name in before if "-beta-" in name}
    assert len(beta_outputs) == 3 and {"preprocess beta", "frames beta"} <= set(first.ran)

    second = build([alpha, beta], folder, options)
    assert {"preprocess beta", "frames beta"} <= set(second.reused)
    assert {"preprocess alpha", "frames alpha"} <= set(second.ran)
    for name in beta_outputs:
        assert contents(os.path.join(work, name)) == before[name], f"{name} was rewritten"
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    recorded = {output for entry in manifest["stages"].values() for output in entry.get("outputs", [])}
    assert {os.path.join("work", name) for name in beta_outputs} <= recorded


def test_in_one_process_the_audit_runs_beside_the_exports_to_what_it_gives_alone(sessions, tmp_path):
    ran_on: dict[str, set[str]] = {}
    times: dict[tuple[str, str], list[float]] = {}

    def profile(frame, event, arg):  # which thread entered each stage's function, and when it entered and left
        if event in ("call", "return") and frame.f_globals.get("__name__") == "jumpnet_stream.build.execute" \
                and frame.f_code.co_name in ("_audit", "_final", "_dataset"):
            ran_on.setdefault(frame.f_code.co_name, set()).add(threading.current_thread().name)
            times.setdefault((frame.f_code.co_name, event), []).append(time.perf_counter())

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        report = build(sessions, tmp_path / "set", BuildOptions(negatives=40, val_fraction=0.3))
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    assert ran_on["_dataset"] == ran_on["_final"] == {"MainThread"}  # the train and val exports, one after another
    assert len(ran_on["_audit"]) == 1 and next(iter(ran_on["_audit"])).startswith("jumpnet-beside")
    assert report.ran[-1] == "audit" and {"final", "final val"} <= set(report.ran)
    audit_ran, exports_ran = [(times[(name, "call")][0], times[(name, "return")][-1]) for name in ("_audit", "_final")]
    assert audit_ran[0] < exports_ran[1] and exports_ran[0] < audit_ran[1]  # at once, not one after the other
    assert report.audit == audit(open_dataset(tmp_path / "set" / "dataset.zarr"), seed=42).counts()
    assert [name for name in threading.enumerate() if name.name.startswith("jumpnet-beside")] == []
