"""The `pcavs` command: a thin layer over `pcavs.generate`, `Pipeline`, `download_weights` and `save_slim`."""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from pathlib import Path

from .errors import PcavsError

PACKAGE = Path(__file__).resolve().parent

EXAMPLES = """examples:
  pcavs demo                                   # the bundled photo and voice -> pcavs_demo.mp4
  pcavs generate --face me.jpg --audio hello.mp3 --out me.mp4
  pcavs generate --face me.jpg --audio hello.wav --pose nod.mp4 --mode grid --out grid.mp4
  pcavs batch jobs.csv                         # columns face,audio,pose,out; one model load
  pcavs batch jobs.csv --ray --workers 4       # the same rows on Ray (pip install "pcavs[ray]")
  pcavs download                               # fetch the released weights into ./checkpoints/demo
  pcavs convert --out pcavs_fp16.safetensors --dtype float16
"""


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("full", "crop", "grid"), default="full", help="output frames (default: full)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps (default: auto)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="network precision (default float32)")
    parser.add_argument("--checkpoints", help="weights folder or slim .safetensors (default: $PCAVS_CHECKPOINTS, ./checkpoints/demo, the user cache)")
    parser.add_argument("--noise", choices=("fixed", "random"), default="fixed", help="generator noise (default: fixed)")
    parser.add_argument("--seed", type=int, help="seed for --noise random")
    parser.add_argument("--pose-loop", choices=("pingpong", "loop", "hold"), default="pingpong")
    parser.add_argument("--batch-size", type=int, help="frames per generator batch")
    parser.add_argument("--aligned", action="store_true", help="inputs already are 224x224 PC-AVS crops")
    parser.add_argument("--face-index", type=int, help="which face to use when a photo shows several (0 = largest)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the generator: ~1 min once, then faster (long jobs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcavs",
        description="Make a photo talk: lip-synced, pose-controllable talking faces (PC-AVS).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="photo + voice (+ pose video) -> mp4", epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--face", action="append", required=True, help="face photo (repeat for several photos of one person)")
    gen.add_argument("--audio", help="speech: wav, mp3, m4a, ogg, flac, or a video with sound")
    gen.add_argument("--pose", help="head motion: a video, a folder of frames, or one image (fixed pose)")
    gen.add_argument("--mouth", help="experimental: drive the mouth from this video instead of the audio")
    gen.add_argument("--out", required=True, help="the mp4 to write")
    _job_options(gen)

    batch = commands.add_parser("batch", help="run every row of a CSV (face,audio,pose,out) with one model load")
    batch.add_argument("jobs", help="CSV file (face,audio,pose,out and any option as a column); paths relative to its folder")
    batch.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                       help="run on Ray: the cluster at $RAY_ADDRESS or a new local one, or the one at ADDRESS")
    batch.add_argument("--workers", type=int, help="Ray workers (default: one per GPU, else one per 4 CPUs)")
    batch.add_argument("--results", help="the results table (default: <jobs>.results.csv beside the jobs file)")
    batch.add_argument("--overwrite", action="store_true", help="redo rows whose output already is a complete video")
    _job_options(batch)

    demo = commands.add_parser("demo", help="run the bundled demo photo, voice and pose clip")
    demo.add_argument("--out", default="pcavs_demo.mp4", help="the mp4 to write (default: pcavs_demo.mp4)")
    _job_options(demo)

    download = commands.add_parser("download", help="fetch and verify the released weights")
    download.add_argument("--dest", help="folder for latest_net_*.pth (default: ./checkpoints/demo)")
    download.add_argument("--url", help="fetch demo.zip from this HTTP(S) address instead of Google Drive")
    download.add_argument("--from-zip", help="install from a demo.zip you downloaded by hand")

    convert = commands.add_parser("convert", help="write one slim .safetensors with only the tensors inference reads")
    convert.add_argument("--checkpoints", help="weights folder (default: as for generate)")
    convert.add_argument("--out", required=True, help="the .safetensors file to write")
    convert.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    return parser


def _options(args: argparse.Namespace) -> dict:
    return dict(
        mode=args.mode, noise=args.noise, seed=args.seed, pose_loop=args.pose_loop, batch_size=args.batch_size,
        aligned=args.aligned, face_index=args.face_index, progress=not args.quiet,
    )


def _model(args: argparse.Namespace) -> dict:
    return dict(checkpoints=args.checkpoints, device=args.device, dtype=args.dtype, compile=args.compile)


def run_generate(args: argparse.Namespace) -> int:
    from .pipeline import generate

    result = generate(args.face, args.audio, args.pose, args.out, mouth=args.mouth, **_model(args), **_options(args))
    print(f"wrote {result.video} ({result.num_frames} frames at {result.fps} fps)")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_AUDIO, DEMO_FACE, DEMO_POSE
    from .download import ensure_weights
    from .pipeline import generate

    args.checkpoints = str(ensure_weights(args.checkpoints))
    result = generate(DEMO_FACE, DEMO_AUDIO, DEMO_POSE, args.out, **_model(args), **_options(args))
    print(f"wrote {result.video} ({result.num_frames} frames at {result.fps} fps)")
    return 0


def run_batch(args: argparse.Namespace) -> int:
    from .batch import batch

    try:
        report = batch(args.jobs, ray=args.ray, workers=args.workers, results=args.results, overwrite=args.overwrite,
                       **_model(args), **_options(args))
    except KeyboardInterrupt:
        print("pcavs: interrupted; the videos already finished are in place (run again to do the rest)", file=sys.stderr)
        return 130
    for row in report.failed:
        print(f"pcavs: row {row.row}: {row.error}", file=sys.stderr)
    print(report.summary())
    return 2 if report.failed else 0


def run_download(args: argparse.Namespace) -> int:
    from .download import download_weights

    print(f"weights ready in {download_weights(dest=args.dest, url=args.url, zip_path=args.from_zip)}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    import torch

    from .weights import load_networks, save_slim

    dtype = torch.float16 if args.dtype == "float16" else torch.float32
    print(f"wrote {save_slim(load_networks(args.checkpoints), args.out, dtype)}")
    return 0


COMMANDS = {
    "generate": run_generate, "batch": run_batch, "demo": run_demo, "download": run_download, "convert": run_convert,
}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """pcavs's own warnings as one line; other libraries' warnings only with --debug."""
    if Path(filename).resolve().is_relative_to(PACKAGE):
        print(f"pcavs: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        warnings.showwarning = _show_warning
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("pcavs: interrupted; no output was written", file=sys.stderr)
        return 130
    except PcavsError as exc:  # bad input, a full disk, missing weights: the message says what to do
        if args.debug:
            traceback.print_exc()
        print(f"pcavs: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an internal failure: one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"pcavs: internal error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
