"""The ``jumpnet-stream`` command line's options: one subparser per command, its arguments and their help.
(What each command does with them is in :mod:`cli`.)"""

from __future__ import annotations

import argparse

from . import __version__

PROG = "jumpnet-stream"


def _pairing(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--pairing", choices=["jump-key", "seed"], default=default,
                        help="what ends a jump: the release of the jump key itself (jump-key, the default), or the "
                        "next release of any key (seed: the original scripts' rule, wrong when keys overlap)")


def _hold(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--hold", choices=["scalar", "vector"], default=default,
                        help="legacy .npz: hold_duration as a 0-d float32 holding the jump key's hold (scalar, the "
                        "default: the original trainer's float(entry[3]) reads it on every numpy), or the seed's "
                        "exact vector (vector: numpy < 2.4 trainers and one key only)")


def _held_frames(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--held-frames", choices=["exclude", "negative"], default=default,
                        help="frames while the jump key is held (from a jump's press to its release): left out "
                        "(exclude, the default) or negatives (negative: the original scripts', which tell the model "
                        "'do not jump' in the middle of a jump)")


def _key_list(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",")]
    if not all(keys):
        raise argparse.ArgumentTypeError(f"expected comma-separated key names, not {text!r}")
    return keys


def _keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=_key_list, default=None, metavar="a,s,d,f",
                        help="the keys of a legacy .npz that holds none (the original scripts' files; default: "
                        "key0, key1, ... after the vectors' length)")


def _cluster(parser: argparse.ArgumentParser, what: str) -> argparse._MutuallyExclusiveGroup:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help=f"run {what} on a Dask LocalCluster of N worker processes on this machine (needs the "
                       "'distributed' extra); the outputs are the same bytes")
    group.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help=f"run {what} on the Dask cluster at ADDRESS (tcp://host:8786), whose workers see the "
                       "inputs and the output folder at the same paths (a shared filesystem)")
    return group


def _common(parser: argparse.ArgumentParser, output: bool = True) -> None:
    if output:
        parser.add_argument("-o", "--output", required=True, metavar="OUT",
                            help="output dataset: .zarr (the store), .npz (the seed's legacy format) or .h5")
        parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("--json", action="store_true", help="print the counts as one JSON object on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Turn gameplay recordings (an .mp4 and a recorder "
                                     "keylog .npz) into labelled jump datasets, streaming, in bounded memory.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("preprocess", help="pair presses with releases: one positive sample per jump",
                       description="Stage 1: walk the keylog's events in order and emit one positive sample per "
                       "jump of KEY (its first press's image, multi_hot and frame index; the hold from the next "
                       "release). Auto-repeat presses are ignored, malformed entries counted and skipped.")
    p.add_argument("raw", metavar="RAW.npz", help="recorder keylog (collected/<name>.npz)")
    _common(p)
    p.add_argument("--key", default="w", help="target key (default: w)")
    _pairing(p, default="jump-key")
    _hold(p, default=None)

    p = sub.add_parser("negatives", help="frames away from every jump, from the video: negative samples",
                       description="Stage 4: every frame of VIDEO not within RADIUS frames of a positive's "
                       "frame_index becomes a negative sample (label 0), resized to the positives' image size, "
                       "in frame order. With --keep N, N of those frames are chosen first (uniformly, seeded, as "
                       "'reduce' would) and only they are decoded to pixels. Memory stays flat in video length.")
    p.add_argument("video", metavar="VIDEO", help="the recording's video (recordings/<name>_<HHMMSS>.mp4)")
    _common(p)
    p.add_argument("--positives", required=True, metavar="POS",
                   help="the positives (.zarr, .npz or .h5) of this recording")
    p.add_argument("--radius", type=int, default=2, help="frames either side of a positive to exclude (default: 2; "
                   "at most 10**9: beyond the video's length it covers the whole video)")
    p.add_argument("--keep", type=int, default=None, metavar="N", help="keep N negatives chosen at random")
    p.add_argument("--seed", type=int, default=42, help="seed of the --keep choice (default: 42)")
    p.add_argument("--size", type=int, default=None,
                   help="square image size (default: the positives' size, 227 if there are none)")
    p.add_argument("--strict", action="store_true", help="a video that ends before its container's frame count "
                   "is an error (default: keep what decoded, and warn)")
    _held_frames(p, default="exclude")

    p = sub.add_parser("reduce", help="keep N samples chosen at random, in order",
                       description="Stage 5: keep N samples of IN chosen uniformly without replacement (seeded), "
                       "in their original order; all of them if there are fewer. Streams: only chosen rows are read.")
    p.add_argument("input", metavar="IN", help="dataset (.zarr, .npz or .h5)")
    _common(p)
    p.add_argument("--keep", type=int, required=True, metavar="N", help="how many samples to keep")
    p.add_argument("--seed", type=int, default=42, help="seed of the choice (default: 42)")

    p = sub.add_parser("augment", help="add augmented copies of every sample (flip, brightness, noise, shift)",
                       description="Stage 3: keep every sample unchanged and add MULTIPLIER augmented copies of each, "
                       "right after it. Per copy, independently: horizontal flip, brightness x U(0.7, 1.3), Gaussian "
                       "noise (sigma 0.02), horizontal shift by -5..5 pixels with zero fill, each with its own "
                       "probability. Seeded: the same input and seed give the same bytes.")
    p.add_argument("input", metavar="IN", help="dataset (.zarr, .npz or .h5), usually the positives")
    _common(p)
    p.add_argument("--multiplier", type=int, default=2, help="augmented copies per sample, 0 to 64 (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--p-flip", type=float, default=0.5, help="probability of a horizontal flip (default: 0.5)")
    p.add_argument("--p-brightness", type=float, default=0.5, help="probability of a brightness change (default: 0.5)")
    p.add_argument("--p-noise", type=float, default=0.3, help="probability of Gaussian noise (default: 0.3)")
    p.add_argument("--p-shift", type=float, default=0.3, help="probability of a horizontal shift (default: 0.3)")

    p = sub.add_parser("merge", help="concatenate datasets, keys remapped to their union; optionally shuffled",
                       description="Stages 2 and 6: concatenate datasets of any format. The key list becomes the "
                       "sorted union of the inputs' keys and every keys_raw/hold_duration vector is remapped to it. "
                       "--shuffle writes a seeded permutation of the whole result, out of core (a temporary spool "
                       "file beside OUT, about a sixth of the images' raw size).")
    p.add_argument("inputs", nargs="+", metavar="IN", help="datasets (.zarr, .npz or .h5)")
    _common(p)
    p.add_argument("--shuffle", action="store_true", help="shuffle the merged samples")
    p.add_argument("--seed", type=int, default=42, help="seed of the shuffle (default: 42)")
    _keys(p)

    p = sub.add_parser("export", help="write a dataset as legacy/columnar .npz, .zarr or .h5",
                       description="Copy a dataset into the format OUT's extension names. .npz with --layout legacy "
                       "(default) is the seed's format, which the original trainer loads with np.load(allow_pickle="
                       "True): jumpnet-stream writes it streaming, but the trainer builds the whole object array in "
                       "RAM, so an export larger than this machine's available memory is refused unless --force. "
                       ".npz with --layout columnar holds one plain array per field (np.load, no pickle); .zarr is a "
                       "copy of the store (--rechunk N: N images per chunk; --codec lz4: faster to decode); .h5 is "
                       "HDF5 (h5py), chunked and lzf-compressed, keys in its attributes.")
    p.add_argument("input", metavar="IN", help="dataset (.zarr, .npz or .h5)")
    _common(p)
    p.add_argument("--layout", choices=["legacy", "columnar"], default=None, help=".npz layout (default: legacy)")
    p.add_argument("--dtype", choices=["float32", "uint8"], default=None,
                   help="image dtype: float32 in [0, 1] or uint8 (default: float32 for legacy .npz, else uint8)")
    _hold(p, default=None)
    p.add_argument("--hold-key", default=None, metavar="KEY",
                   help="legacy .npz with --hold scalar: whose hold it keeps (default: the key the dataset was built "
                   "for, from its provenance, or its only key)")
    _keys(p)
    p.add_argument("--rechunk", type=int, default=None, metavar="N",
                   help=".zarr: N images per chunk (default: 64; at most 64 MB per chunk)")
    p.add_argument("--codec", choices=["zstd", "lz4"], default=None,
                   help=".zarr: image compression, zstd (default) or lz4 (blosc lz4: about 30%% more bytes, "
                   "decoded about 3 times as fast, for reading in a training loop)")
    p.add_argument("--exclude", metavar="MARKS.json", default=None,
                   help="leave out the samples marked bad in this marks file (jumpnet-stream view writes "
                   "NAME.marks.json beside the set); counted in the output's provenance")
    p.add_argument("--force", action="store_true", help="write a legacy .npz even if it will not fit in memory here")

    p = sub.add_parser("build", help="every stage, from recordings to a shuffled training set (resumable)",
                       description="For each recording: preprocess, then negatives decoded only at the frames chosen "
                       "(NEGATIVES in total, uniformly over the eligible frames of all recordings). Then all positives "
                       "(presses never released left out), augmented, merged with the negatives and shuffled: "
                       "DIR/dataset.zarr, DIR/final.npz (the seed's format, for the original trainer) and "
                       "DIR/manifest.json (inputs with hashes, each stage's parameters and counts). Stages already "
                       "done with the same inputs and options are reused, so an interrupted build picks up where it "
                       "stopped. Options given here override the config file.")
    p.add_argument("directories", nargs="*", metavar="FOLDER",
                   help="folders of recordings: <name>.npz paired with <name>_<HHMMSS>.mp4 (in FOLDER or its "
                   "subfolders, e.g. collected/ and recordings/)")
    p.add_argument("--recording", action="append", metavar="RAW.npz", help="a keylog (repeat; pairs with --video)")
    p.add_argument("--video", action="append", metavar="VIDEO", help="its video (repeat, in the same order)")
    p.add_argument("--config", metavar="build.toml", help="options and recordings in a TOML file (see README)")
    p.add_argument("-o", "--output", metavar="DIR", help="output directory (new, empty, or an earlier build's)")
    p.add_argument("--key", default=None, help="the jump key (default: w)")
    p.add_argument("--multiplier", type=int, default=None, help="augmented copies per positive, 0 to 64 "
                   "(default: 2)")
    p.add_argument("--negatives", type=int, default=None, help="negatives in total (default: 500)")
    p.add_argument("--radius", type=int, default=None, help="frames either side of a positive that are never "
                   "negatives (default: 2; at most 10**9: beyond the video's length it covers the whole video)")
    p.add_argument("--seed", type=int, default=None, help="seed of every random choice (default: 42)")
    p.add_argument("--keep-unreleased", action="store_const", const=True, default=None,
                   help="keep positives whose press was never released (hold NaN)")
    p.add_argument("--no-legacy", dest="legacy", action="store_const", const=False, default=None,
                   help="do not write final.npz")
    _pairing(p, default=None)
    _hold(p, default=None)
    p.add_argument("--strict", action="store_const", const=True, default=None, help="a video that ends before its "
                   "container's frame count is an error (default: keep what decoded, and warn)")
    _held_frames(p, default=None)
    p.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help="the share of frames that validates, 0 to below 1 (default: 0, no split): whole recordings "
                   "when there are at least 4, else a block of each recording, kept apart from training frames by the "
                   "radius plus the longest hold; validation samples are never augmented")
    p.add_argument("--negative-ratio", type=float, default=None, metavar="R",
                   help="negatives = R x positives (after augmentation), per split, instead of --negatives")
    p.add_argument("--positive-images", choices=["video", "keylog"], default=None,
                   help="positives' images: the video frame at the press, the recorder's key label masked in every "
                   "image (video, the default: both classes carry the same codec artifacts), or the keylog's clean "
                   "captures (keylog, the original scripts': sharpness alone then tells the classes apart)")
    p.add_argument("--history", type=int, default=None, metavar="K",
                   help="also store the K video frames before each sample (0 to 32, default: 0), shared between "
                   "samples in DIR/dataset.zarr's history group; TrainingSet(history=K) returns them stacked")
    p.add_argument("--history-stride", type=int, default=None, metavar="S",
                   help="frames between history frames (1 to 3600, default: 1)")
    p.add_argument("--exclude", metavar="MARKS.json", default=None,
                   help="leave out of the set the samples marked bad in this marks file (jumpnet-stream view writes "
                   "NAME.marks.json beside the set); counted in the manifest and the set's provenance; a change "
                   "to the file redoes only the set and what follows it")
    p.add_argument("--fresh", action="store_true", help="redo every stage, ignoring earlier results in DIR")
    _cluster(p, "the stages").add_argument(
        "--shard", default=None, metavar="I/N", help="run only the per-recording stages of recordings I, I+N, "
        "I+2N, ... (one job of an array of N, e.g. SLURM's, no Dask): their positives and, once every recording's "
        "positives are done (run the array twice), their negatives; a plain build in DIR then reuses them")
    _common(p, output=False)

    p = sub.add_parser("demo", help="make a synthetic recording and build a training set from it",
                       description="Write a synthetic recording (FOLDER/recordings: demo.npz and demo_120000.mp4), "
                       "run 'build' on it into FOLDER/build, and draw FOLDER/sheet.png: the quickest check that "
                       "everything works on this machine.")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the recording, 1 to 600 (default: 60)")
    _common(p, output=False)

    p = sub.add_parser("inspect", help="count, class balance, hold statistics, first samples; a contact sheet",
                       description="Describe a dataset of any format: sample count, class balance, keys, "
                       "hold-duration statistics of the positives and the first N samples' fields (the seed's "
                       "preview). --sheet draws sample images in a captioned PNG grid (positives framed green, "
                       "negatives grey).")
    p.add_argument("path", metavar="PATH", help="dataset (.zarr, .npz or .h5)")
    p.add_argument("-n", type=int, default=5, help="samples to preview (default: 5)")
    p.add_argument("--sheet", metavar="OUT.png", help="draw a contact sheet")
    p.add_argument("--count", type=int, default=24, help="samples on the sheet, at most 1000 (default: 24)")
    p.add_argument("--columns", type=int, default=6, help="sheet columns, 1 to 100 (default: 6)")
    p.add_argument("--pick", choices=["first", "spread", "random"], default="first",
                   help="which samples: the first, evenly spread, or random (default: first)")
    p.add_argument("--seed", type=int, default=42, help="seed of --pick random (default: 42)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.png if it exists")
    p.add_argument("--no-audit", action="store_true", help="skip the shortcut audit (it reads up to 2000 original "
                   "images of each class)")
    _keys(p)
    _common(p, output=False)

    p = sub.add_parser("check", help="does this keylog belong to this video? (exit 2 if suspect)",
                       description="Compare a keylog with its video before building: whether its frame indices fit "
                       "the video (range, steps back, event rate against frame rate) and how the press images "
                       "compare with the frames they name (mean difference per event, against offsets of a few "
                       "frames and a random-frame baseline). Decodes only the frames it compares. 'check DIR' checks "
                       "every recording of a folder (paired as build pairs them), in parallel with --workers or "
                       "--scheduler. Exit 0 if ok, 2 if suspect, 1 on an error.")
    p.add_argument("raw", metavar="RAW.npz|DIR", help="recorder keylog, or a folder of recordings")
    p.add_argument("video", metavar="VIDEO", nargs="?", default=None, help="the video it should belong to")
    p.add_argument("--size", type=int, default=None, help="image size to compare at (default: the keylog's)")
    p.add_argument("--sample", type=int, default=200, help="events whose images are compared, 1 to 1000 "
                   "(default: 200)")
    p.add_argument("--max-offset", type=int, default=2, help="frame offsets tried either side (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the event sample (default: 0)")
    _cluster(p, "the checks of DIR's recordings")
    _common(p, output=False)
    p = sub.add_parser(
        "view", help="browse a dataset, build folder or keylog in a local web page; mark bad samples",
        description="Serve a web page on 127.0.0.1 (this machine only) over PATH: a dataset (.zarr, .npz, .h5), a "
        "build folder or a recorder keylog. A paged grid of samples with filters, each sample with every field, "
        "its augmented copies and its video frames; the plots (class balance, holds, jumps along each recording, "
        "the shortcut audit, the build's accounting); samples marked bad are saved to NAME.marks.json beside the "
        "set, never into it. Stop it with Ctrl-C.")
    p.add_argument("path", metavar="PATH", help="a dataset, a build folder (holding manifest.json) or a keylog .npz")
    p.add_argument("--port", type=int, default=8765, help="the port on 127.0.0.1 (default: 8765; 0: any free one)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object on stdout when it stops "
                   "(the address goes to stderr)")
    return parser
