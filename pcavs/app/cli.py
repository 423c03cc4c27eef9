"""The `pcavs` command: a thin layer over `pcavs.generate`, `Pipeline`, the weights registry and `save_slim`."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
import warnings
from dataclasses import asdict
from pathlib import Path

from ..core import options
from ..core.errors import InputError, PcavsError, WeightsError
from ..core.version import __version__
from ..models.registry import MODELS
from . import limits as web

PACKAGE = Path(__file__).resolve().parent.parent

EXAMPLES = """examples:
  pcavs demo                                   # the bundled photo and voice -> pcavs_demo.mp4
  pcavs generate --face me.jpg --audio hello.mp3 --out me.mp4
  pcavs generate --face me.jpg --audio hello.wav --pose nod.mp4 --mode grid --out grid.mp4
  pcavs batch jobs.csv                         # columns face,audio,pose,out; one model load
  pcavs generate --face me.jpg --audio hello.mp3 --enhance gfpgan --out sharp.mp4
  pcavs batch jobs.csv --ray --workers 4       # the same rows on Ray (pip install "pcavs[ray]")
  pcavs download                               # fetch the released weights into the user cache
  pcavs download gfpgan                        # GFPGAN v1.4 for --enhance gfpgan (also fetched on first use)
  pcavs eval me.mp4 --plot sync.png             # lip-sync scores (needs `pcavs download syncnet` once)
  pcavs convert --out pcavs_fp16.safetensors --dtype float16
  pcavs serve                                  # the web app on http://127.0.0.1:7860 (pip install "pcavs[serve]")
  pcavs serve --ray --replicas 4               # the same app, its videos made by Ray Serve replicas
  pcavs serve --ray --replicas 1-4             # from 1 to 4 replicas, as Ray Serve's autoscaler sees the load
"""


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps (default: auto)")
    parser.add_argument("--dtype", choices=options.DTYPE_NAMES, help="network precision (default float32; auto: bfloat16 on CPUs with bf16 instructions)")
    parser.add_argument("--checkpoints", help="weights folder or slim .safetensors (default: $PCAVS_CHECKPOINTS, ./checkpoints/demo, the user cache)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the generator: ~1 min once, then faster (long jobs)")
    options.add_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcavs",
        description="Make a photo talk: lip-synced, pose-controllable talking faces (PC-AVS).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--version", action="version", version=f"pcavs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="photo + voice (+ pose video) -> mp4", epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--face", action="append", required=True, help="face photo (repeat for several photos of one person)")
    gen.add_argument("--audio", help="speech: wav, mp3, m4a, ogg, flac, or a video with sound")
    gen.add_argument("--pose", help="head motion: a video, a folder of frames, or one image (fixed pose)")
    gen.add_argument("--mouth", help="experimental: drive the mouth from this video instead of the audio")
    gen.add_argument("--out", required=True, help="the mp4 to write")
    gen.add_argument("--eval", action="store_true", help="then print the lip-sync scores of the generated faces (SyncNet)")
    gen.add_argument("--syncnet", help="SyncNet weights for --eval (default: $PCAVS_SYNCNET, the user cache)")
    _job_options(gen)

    batch = commands.add_parser("batch", help="run every row of a CSV (face,audio,pose,out) with one model load")
    batch.add_argument("jobs", help="CSV file (face,audio,pose,out and any option as a column); paths relative to its folder")
    batch.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                       help="run on Ray (after the jobs file): the cluster at $RAY_ADDRESS or a new local one, or the one at ADDRESS")
    batch.add_argument("--workers", type=int, help="Ray workers (default: one per GPU, else one per 4 CPUs)")
    batch.add_argument("--results", help="the results table (default: <jobs>.results.csv beside the jobs file)")
    batch.add_argument("--overwrite", action="store_true",
                       help="redo rows whose output already is a complete video, and replace outputs that are not")
    batch.add_argument("--row-timeout", type=float, metavar="SECONDS",
                       help="stop and fail a row still running after this long (default: 10 minutes plus 10 s per "
                            "frame of its audio, 50 s with --enhance)")
    _job_options(batch)

    demo = commands.add_parser("demo", help="run the bundled demo photo, voice and pose clip")
    demo.add_argument("--out", default="pcavs_demo.mp4", help="the mp4 to write (default: pcavs_demo.mp4)")
    _job_options(demo)

    evaluate = commands.add_parser("eval", help="lip-sync (LSE-D, LSE-C, offset) and quality scores of talking-face videos")
    evaluate.add_argument("video", nargs="?", help="the video to score (a 224x224 face video is scored as it is; "
                                                   "in any other the face is found and cropped)")
    evaluate.add_argument("--audio", help="the speech to score against (default: the video's own audio)")
    evaluate.add_argument("--reference", help="the ground-truth video: adds SSIM, PSNR and LMD")
    evaluate.add_argument("--csv", help="score every row of a CSV (columns video[,audio][,reference]) with one model load")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.add_argument("--plot", help="write a PNG: per-window confidence over time and distance against offset")
    evaluate.add_argument("--syncnet", help="SyncNet weights (default: $PCAVS_SYNCNET, then the user cache)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps (default: auto)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")

    download = commands.add_parser("download", help="fetch and verify released weights into the user cache")
    download.add_argument("model", nargs="?", choices=tuple(MODELS), default="pcavs",
                          help="which weights (default: pcavs, the PC-AVS checkpoint)")
    download.add_argument("--dest", help="where to install them, or with --check where they are (default: the user cache, "
                                         "$PCAVS_HOME or ~/.cache/pcavs; --check: where pcavs would load them from)")
    download.add_argument("--url", help="fetch from this http(s) address instead of the official one")
    download.add_argument("--from-zip", help="pcavs: install from a demo.zip you downloaded by hand")
    download.add_argument("--from-file", help="gfpgan, syncnet: install a copy of the file you already have")
    download.add_argument("--no-verify", action="store_true",
                          help="with --from-file: install it even if it is not the published file (a warning says so)")
    download.add_argument("--check", action="store_true",
                          help="install nothing: check the installed weights (SHA-256, then a strict load)")

    serve = commands.add_parser("serve", help="the web app: make videos in the browser, live from the microphone, /generate API")
    serve.add_argument("--host", default=web.HOST, help=f"address to listen on (default: {web.HOST}, this machine only; "
                                                           "0.0.0.0 is every interface)")
    serve.add_argument("--port", type=int, default=web.PORT, help=f"port (default: {web.PORT})")
    serve.add_argument("--share", action="store_true",
                       help="also a public *.gradio.live link (needs the internet, and a login: $PCAVS_AUTH or --auth-file)")
    serve.add_argument("--no-auth", action="store_true", help="with --share: share it without a login (warned in the log and the page)")
    serve.add_argument("--auth-file", metavar="FILE", help="require a login: USER:PASSWORD lines (default: $PCAVS_AUTH)")
    serve.add_argument("--auth", metavar="USER:PASSWORD", help=argparse.SUPPRESS)  # refused: the password would be in the process list
    serve.add_argument("--concurrency", type=int, default=1, help="jobs at a time per device (default: 1)")
    serve.add_argument("--queue", type=int, default=web.QUEUE, help=f"requests waiting at most (default: {web.QUEUE})")
    serve.add_argument("--per-client", type=int, default=web.PER_CLIENT,
                       help=f"places in the queue one client holds at most (default: {web.PER_CLIENT})")
    serve.add_argument("--max-file-size", default=web.MAX_FILE_SIZE, help=f"largest upload, e.g. 20mb (default: {web.MAX_FILE_SIZE})")
    serve.add_argument("--max-seconds", type=float, default=web.MAX_SECONDS,
                       help=f"longest voice or head-motion video a request may send (default: {web.MAX_SECONDS:g})")
    serve.add_argument("--job-timeout", type=float, default=web.JOB_TIMEOUT,
                       help=f"seconds a job may run before it is cancelled (default: {web.JOB_TIMEOUT:g})")
    serve.add_argument("--no-enhance", action="store_true", help="refuse requests that ask for GFPGAN (enhance)")
    serve.add_argument("--ice-server", action="append", metavar="URL",
                       help="a STUN or TURN server for Live (repeat; TURN when browsers are on another network)")
    serve.add_argument("--live-dtype", choices=options.DTYPE_NAMES, default="auto",
                       help="Live's precision (default: auto, bfloat16 on CPUs with bf16 instructions)")
    serve.add_argument("--checkpoints", help="weights folder or slim .safetensors (default: as for generate)")
    serve.add_argument("--device", default="auto", help="auto (every GPU, else the CPU), cpu, cuda, cuda:1 or mps")
    serve.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                       help="make the videos and Live's frames on Ray Serve replicas (the page, the API and WebRTC stay "
                            "here): the cluster at $RAY_ADDRESS or a new local one, or the one at ADDRESS "
                            "(pip install \"pcavs[ray]\")")
    serve.add_argument("--replicas", metavar="N|MIN-MAX",
                       help="with --ray: replicas of the networks, N, or MIN-MAX to let Ray Serve autoscale between them "
                            "(up to MAX jobs at once; default: one per GPU, else 1; one CPU and one thread each)")

    convert = commands.add_parser("convert", help="write one slim .safetensors with only the tensors inference reads")
    convert.add_argument("--checkpoints", help="weights folder (default: as for generate)")
    convert.add_argument("--out", required=True, help="the .safetensors file to write")
    convert.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    return parser


def _model(args: argparse.Namespace) -> dict:
    return dict(checkpoints=args.checkpoints, device=args.device, dtype=args.dtype, compile=args.compile)


def _generate(face, audio, pose, out, args: argparse.Namespace, **changes):
    from ..generation.pipeline import generate

    job = options.from_arguments(args).update(**changes)
    return generate(face, audio, pose, out, **_model(args), **asdict(job))


def run_generate(args: argparse.Namespace) -> int:
    syncnet = None
    if args.eval:  # missing SyncNet weights fail before the generation, not after
        from ..core.devices import resolve_device
        from ..metrics.evaluate import resolve_syncnet

        syncnet = resolve_syncnet(args.syncnet, resolve_device(args.device))
    result = _generate(args.face, args.audio, args.pose, args.out, args, return_faces=args.eval)
    print(f"wrote {result.video} ({result.num_frames} frames at {result.fps} fps)")
    if syncnet is not None:
        from ..metrics.evaluate import evaluate_faces

        sound = args.audio if args.audio is not None else args.mouth
        scores = evaluate_faces(result.faces, sound, syncnet=syncnet, device=args.device, progress=not args.quiet,
                                name=f"{result.video} (generated faces)")
        print(scores.summary())
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from ..core.assets import DEMO_AUDIO, DEMO_FACE, DEMO_POSE
    from ..models.download import ensure_weights

    args.checkpoints = str(ensure_weights(args.checkpoints))
    result = _generate(DEMO_FACE, DEMO_AUDIO, DEMO_POSE, args.out, args)
    print(f"wrote {result.video} ({result.num_frames} frames at {result.fps} fps)")
    return 0


def run_batch(args: argparse.Namespace) -> int:
    from ..batches.run import batch

    try:
        report = batch(args.jobs, ray=args.ray, workers=args.workers, results=args.results, overwrite=args.overwrite,
                       row_timeout=args.row_timeout, **_model(args), **asdict(options.from_arguments(args)))
    except KeyboardInterrupt:
        print("pcavs: interrupted; the videos already finished are in place (run again to do the rest)", file=sys.stderr)
        return 130
    for row in report.failed:
        print(f"pcavs: row {row.row}: {row.error}", file=sys.stderr)
    print(report.summary())
    return 2 if report.failed else 0


def run_eval(args: argparse.Namespace) -> int:
    from ..core.devices import resolve_device
    from ..metrics import evaluate as evaluation

    if (args.video is None) == (args.csv is None):
        raise InputError("eval: give one VIDEO, or --csv videos.csv for many")
    if args.csv is not None and (args.audio or args.reference or args.plot):
        raise InputError("eval --csv: put audio and reference in the CSV's columns; --plot takes one video")
    device = resolve_device(args.device)
    syncnet = evaluation.resolve_syncnet(args.syncnet, device)
    if args.csv is None:
        result = evaluation.evaluate(args.video, args.audio, args.reference, syncnet, device, progress=not args.quiet)
        if args.plot:
            result.plot(args.plot)
        print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
        if args.plot and not args.json:
            print(f"wrote {args.plot}")
        return 0
    results, failed = [], 0
    for number, row in evaluation.read_csv(args.csv):
        try:
            results.append(evaluation.evaluate(row["video"], row.get("audio"), row.get("reference"), syncnet, device,
                                               progress=not args.quiet))
        except WeightsError:  # no row can run
            raise
        except PcavsError as exc:
            failed += 1
            print(f"pcavs: row {number}: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict(windows=False) for r in results], indent=2))
    else:
        print(evaluation.results_table(results))
        print(f"{len(results)} of {len(results) + failed} videos scored")
    return 2 if failed else 0


def run_download(args: argparse.Namespace) -> int:
    from ..models import download

    weights = MODELS[args.model]
    if args.from_file if weights.archive else args.from_zip:
        wrong, meant = ("--from-file", "gfpgan and syncnet") if weights.archive else ("--from-zip", "PC-AVS's demo.zip")
        raise InputError(f"{wrong} is for {meant}; for {weights.title} use {weights.source_option} {weights.download_name}")
    if args.no_verify and not args.from_file:
        raise InputError("--no-verify is only for --from-file (a file you have); a download is always checked "
                         "against the published SHA-256")
    if args.check:
        if args.url or args.from_zip or args.from_file:
            raise InputError("--check installs nothing: give it no --url, --from-zip or --from-file (--dest: where to look)")
        print(f"ok: {download.check(weights.name, args.dest)}")
        return 0
    where = download.install(weights.name, args.dest, args.url, args.from_zip or args.from_file, not args.no_verify)
    print(f"weights ready in {where}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    import torch

    from ..models.weights import load_networks, save_slim

    dtype = torch.float16 if args.dtype == "float16" else torch.float32
    print(f"wrote {save_slim(load_networks(args.checkpoints), args.out, dtype)}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    if args.auth is not None:
        raise InputError("--auth USER:PASSWORD would show the password in the process list; "
                         "set $PCAVS_AUTH=USER:PASSWORD or give --auth-file FILE")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the server the way Ctrl-C does: folders removed
    from . import serve

    serve.serve(host=args.host, port=args.port, share=args.share, concurrency=args.concurrency, queue=args.queue,
              max_file_size=args.max_file_size, auth=serve.read_logins(args.auth_file), checkpoints=args.checkpoints,
              device=args.device, max_seconds=args.max_seconds, job_timeout=args.job_timeout, per_client=args.per_client,
              allow_enhance=not args.no_enhance, ice_servers=args.ice_server, no_auth=args.no_auth,
              live_dtype=args.live_dtype, ray=args.ray, replicas=args.replicas)
    return 0


COMMANDS = {
    "generate": run_generate, "batch": run_batch, "demo": run_demo, "download": run_download, "convert": run_convert,
    "eval": run_eval, "serve": run_serve,
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
