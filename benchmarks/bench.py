"""Speed of pcavs on this machine: seconds per frame, a per-stage table, and useful GFLOP/s against
the same run's measured convolution (the best of the generator's own conv shapes) and matmul throughput.

    python benchmarks/bench.py [--frames 48] [--batch-size 8] [--dtype float32|bfloat16|float16]
                               [--device cpu|cuda] [--compile] [--full] [--enhance [--enhance-frames 8]]

The job: the conformance kit's aligned face and pose frames (tests/data/pcavs) with weights
synthesized by its rule (tests/support/pcavs_weights.py), `crop` mode, audio cut to --frames frames. --full adds a run in
`full` mode with a 1080p photo (the face placed into a 1920x1080 canvas, real detection and
paste-back). --enhance adds GFPGAN v1.4 (weights synthesized by its kit's rule, tests/support/gfpgan_weights.py):
its seconds per face and useful GFLOP/s next to the generator's, and the flicker of a static-pose
full-mode job on that photo (mean absolute frame-to-frame difference inside the face mask) without
restoration, with it, and with `enhance_smooth`. Figures are printed, never asserted.

    python benchmarks/bench.py --all [--json PATH] [--frames 16] [--faces 2]

--all: every stage of the speed table in one run, each in its own process (so each has its own peak memory)
right after that process measured the machine's conv and matmul peak in the stage's dtype: the generator
in float32 and bfloat16 (seconds per frame of G), GFPGAN v1.4 in float32 and bfloat16 (seconds per face),
and `pcavs eval`'s SyncNet on the syncnet kit's 6.4 s video (seconds per second of video; the towers alone
in float32 and bfloat16 too, with the LSE difference). bfloat16 rows run where the CPU has bf16
instructions. Each row: seconds per item, useful GFLOP/s, the same process's conv and matmul peak, the
ratio stage/conv peak, peak resident memory, and for bfloat16 the levels (or LSE) from float32.
--json PATH writes the same figures. With --device cuda, --all runs the GPU suite instead: float16 and
bfloat16, a batch sweep of the generator, torch.compile, streaming latency and a 60 s voice end to end
(--gpu-suite runs that suite on the CPU with small sizes, to check it).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "tests" / "data" / "pcavs"
sys.path.insert(0, str(ROOT / "tests"))
# Useful work per frame (GFLOP): generator, pose encoder (per distinct pose frame), audio encoder; identity once per job;
# GFPGAN per 512 face (torch.utils.flop_counter: 395.46 in convolutions, 0.08 in final_linear).
GFLOP = {"G": 69.4, "E": 12.7, "A_sync": 0.94, "V": 8.6, "GFPGAN": 395.5}
SMOOTHING = (0.5, 0.8)  # enhance_smooth values measured against flicker


def synthesize_weights(folder: Path) -> None:
    from support.pcavs_weights import write_checkpoints

    write_checkpoints(folder)


# The generator's own 3x3 convolution shapes (batch 4): the machine's float32 conv throughput is the best of them.
CONV_SHAPES = ((512, 28), (512, 56), (256, 112), (128, 224))


def machine_throughput(device: torch.device, dtype: torch.dtype) -> tuple[float, float, dict]:
    """GFLOP/s of the best 3x3 convolution over CONV_SHAPES, of a 2048^3 matmul, and per conv shape."""
    def rate(fn, flop):
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, runs = time.perf_counter(), 0
        while time.perf_counter() - start < 2.0:
            fn()
            runs += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return flop * runs / (time.perf_counter() - start) / 1e9

    convs = {}
    with torch.inference_mode():
        for channels, size in CONV_SHAPES:
            x = torch.randn(4, channels, size, size, device=device, dtype=dtype)
            w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
            flop = 2 * 4 * channels * channels * 9 * size * size
            convs[f"{channels}ch@{size}"] = rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), flop)
        a = torch.randn(2048, 2048, device=device, dtype=dtype)
        matmul = rate(lambda: a @ a, 2 * 2048**3)
    return max(convs.values()), matmul, convs


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(pipe, frames: int, folder: Path, mode: str, face, aligned: bool):
    pose = sorted((KIT / "inputs" / "pose").glob("*.png"))
    speech, rate = sf.read(KIT / "inputs" / "speech.wav", dtype="float32")
    audio = folder / f"bench_{frames}.wav"
    sf.write(audio, speech[: frames * 640], rate)
    if not aligned:
        pose = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in pose]
    timer = pipe.profile()
    start = time.perf_counter()
    result = pipe(face=face, audio=audio, pose=pose if aligned else None, out=folder / f"bench_{mode}.mp4",
                  mode=mode, aligned=aligned, progress=False, return_frames=False)
    total = time.perf_counter() - start
    return result, total, dict(timer.seconds)


def photo_1080p(identity: Path) -> np.ndarray:
    """The kit's face turned by 4 degrees and enlarged 2.2x into a flat grey 1920x1080 photo."""
    photo = np.full((1080, 1920, 3), 120, np.uint8)
    face = cv2.cvtColor(cv2.imread(str(identity)), cv2.COLOR_BGR2RGB)
    matrix = cv2.getRotationMatrix2D((112, 112), 4, 2.2)
    matrix[:, 2] += (700, 200)
    return np.where(cv2.warpAffine(np.ones((224, 224), np.uint8), matrix, (1920, 1080))[:, :, None] > 0,
                    cv2.warpAffine(face, matrix, (1920, 1080)), photo)


def flicker(frames: np.ndarray, window: tuple[slice, slice], mask: np.ndarray) -> float:
    """Mean absolute frame-to-frame difference (grey levels) of the pixels where `mask` (over `window`) is set."""
    region = frames[:, window[0], window[1]].astype(np.int16)
    return float(np.abs(np.diff(region, axis=0))[:, mask].mean())


def enhance_report(pipe, folder: Path, photo: np.ndarray, frames: int) -> None:
    """GFPGAN's speed next to the generator's, and the flicker of a static-pose job with and without it."""
    from support.gfpgan_weights import write_checkpoint
    from pcavs.faces.align import Paster, crop_to_generated, prepare_face

    checkpoint = write_checkpoint(folder)
    speech, rate = sf.read(KIT / "inputs" / "speech.wav", dtype="float32")
    audio = folder / f"enhance_{frames}.wav"
    sf.write(audio, speech[: frames * 640], rate)
    paster = Paster(photo, crop_to_generated(prepare_face(photo)[1].matrix))
    mask = paster.mask[:, :, 0] > 0.5  # the pasted face, over paster.window

    def job(**enhance):
        timer = pipe.profile()
        start = time.perf_counter()
        result = pipe(face=photo, audio=audio, out=folder / "enhance.mp4", mode="full", progress=False,
                      return_frames=True, **enhance)
        return result.frames, time.perf_counter() - start, dict(timer.seconds)

    plain, plain_total, plain_stages = job()
    enhanced = dict(enhance="gfpgan", enhance_checkpoint=checkpoint)
    restored, total, stages = job(**enhanced)
    print(f"\n## enhance=gfpgan: full mode, 1080p photo, photo's own pose, {frames} frames")
    print(f"without: {plain_total / frames:.3f} s/frame; with: {total / frames:.3f} s/frame")
    for stage, gflop in (("G", GFLOP["G"]), ("enhance", GFLOP["GFPGAN"])):
        seconds = stages[stage] / frames
        print(f"{stage:<8} {seconds:8.3f} s/frame  {gflop / seconds:6.0f} useful GFLOP/s ({gflop} GFLOP per frame)")
    restorer = pipe._restorer[1]
    faces = np.random.default_rng(0).integers(0, 256, (2, 512, 512, 3), dtype=np.uint8)
    start = time.perf_counter()
    restorer(faces)
    seconds = (time.perf_counter() - start) / len(faces)
    print(f"restorer alone, batch {restorer.default_batch_size()}: {seconds:.3f} s/face, "
          f"{GFLOP['GFPGAN'] / seconds:.0f} useful GFLOP/s")
    print("flicker inside the face mask (mean |frame_t - frame_t-1|, grey levels):")
    for noise in ("fixed", "random"):  # random: fresh noise maps per frame in G and GFPGAN (GFPGAN's own default)
        seeded = dict(noise=noise, seed=0 if noise == "random" else None)
        figures = {"without": plain if noise == "fixed" else job(**seeded)[0],
                   "gfpgan": restored if noise == "fixed" else job(**seeded, **enhanced)[0]}
        for smooth in SMOOTHING:
            figures[f"gfpgan + enhance_smooth={smooth}"] = job(**seeded, **enhanced, enhance_smooth=smooth)[0]
        shown = ", ".join(f"{name} {flicker(frames, paster.window, mask):.2f}" for name, frames in figures.items())
        print(f"  noise={noise}: {shown}")


def report(title: str, frames: int, total: float, stages: dict, distinct_poses: int, conv: float, matmul: float) -> None:
    useful = frames * (GFLOP["G"] + GFLOP["A_sync"]) + distinct_poses * GFLOP["E"] + GFLOP["V"] + GFLOP["E"]
    print(f"\n## {title}: {frames} frames in {total:.2f} s = {total / frames:.3f} s/frame ({frames / total:.2f} frames/s)")
    print(f"{'stage':<22}{'seconds':>9}{'s/frame':>10}{'share':>8}")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"{stage:<22}{seconds:>9.2f}{seconds / frames:>10.4f}{seconds / total:>8.1%}")
    other = total - sum(stages.values())
    print(f"{'(other)':<22}{other:>9.2f}{other / frames:>10.4f}{other / total:>8.1%}")
    rate = useful / total
    print(f"useful work {useful:.0f} GFLOP -> {rate:.0f} GFLOP/s = {rate / conv:.0%} of conv, {rate / matmul:.0%} of matmul")
    print(f"reference: 2.7 s/frame on a 2-core CPU -> {2.7 / (total / frames):.1f}x faster here")


# ------------------------------------------------------------------ --all: every row of the speed table

SYNCNET_KIT = ROOT / "tests" / "data" / "syncnet"
GFPGAN_FACE = ROOT / "tests" / "data" / "gfpgan" / "input_000000.png"
SYNCNET_GFLOP_PER_WINDOW = 3.6  # lip tower 3.12 + audio tower 0.49 (torch.utils.flop_counter); 25 windows a second


def cpu_facts() -> dict:
    """The CPU model, its vector flags that matter here, the load average and torch's threads."""
    import os
    import platform

    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
    return {"model": model, "flags": [f for f in wanted if f in flags], "cores": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


def timed(fn, repeats: int) -> float:
    """Seconds per call of fn over `repeats` calls, after one call to warm up."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def levels(ours: np.ndarray, base: np.ndarray) -> dict:
    diff = np.abs(ours.astype(np.int16) - base.astype(np.int16))
    return {"max_levels": int(diff.max()), "mean_levels": float(diff.mean())}


def stage_generator(folder: Path, dtype: str, frames: int) -> dict:
    """G's seconds per frame inside a crop job on aligned inputs (the job's own stage timer), batch default."""
    import pcavs

    pipe = pcavs.Pipeline.from_pretrained(folder, device="cpu", dtype=dtype)
    identity = KIT / "inputs" / "identity" / "000000.png"
    run_job(pipe, 8, folder, "crop", identity, True)  # warm-up
    result, total, stages = run_job(pipe, frames, folder, "crop", identity, True)
    row = {"item": "frame", "items": result.num_frames, "seconds_per_item": stages["G"] / result.num_frames,
           "gflop_per_item": GFLOP["G"], "job_seconds_per_frame": total / result.num_frames,
           "batch": pipe.default_batch_size(), "peak_rss_mb": peak_rss_mb()}
    if dtype != "float32":
        speech = KIT / "inputs" / "speech_short.wav"
        reference = pcavs.Pipeline.from_pretrained(folder, device="cpu")
        ours = pipe(face=str(identity), audio=speech, out=None, aligned=True, progress=False).faces
        base = reference(face=str(identity), audio=speech, out=None, aligned=True, progress=False).faces
        row["vs_float32"] = levels(ours, base)
    return row


def stage_gfpgan(folder: Path, dtype: str, faces: int) -> dict:
    """The restorer's seconds per 512 face at its default batch (the kit's face, repeated)."""
    from support.gfpgan_weights import write_checkpoint
    from pcavs.restore.restorer import Restorer

    checkpoint = write_checkpoint(folder)
    restorer = Restorer.from_pretrained(checkpoint, device="cpu", dtype=dtype)
    face = cv2.cvtColor(cv2.imread(str(GFPGAN_FACE)), cv2.COLOR_BGR2RGB)
    batch = np.repeat(face[None], faces, 0)
    seconds = timed(lambda: restorer(batch), 1) / faces
    row = {"item": "face", "items": faces, "seconds_per_item": seconds, "gflop_per_item": GFLOP["GFPGAN"],
           "batch": restorer.default_batch_size(), "peak_rss_mb": peak_rss_mb()}
    if dtype != "float32":
        base = Restorer.from_pretrained(checkpoint, device="cpu")(batch[:1])
        row["vs_float32"] = levels(restorer(batch[:1]), base)
    return row


class _CastTowers:
    """SyncNet's two towers run in `dtype`, fed and read back in float32 (for the bfloat16 row)."""

    def __init__(self, net, dtype: torch.dtype):
        self.net, self.dtype = net.to(dtype), dtype

    def lip(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net.lip(frames.to(self.dtype)).float()

    def audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.net.audio(mfcc.to(self.dtype)).float()


def stage_syncnet(folder: Path, dtype: str) -> dict:
    """`pcavs eval` (evaluate) of the syncnet kit's 6.4 s crop video: seconds per second of video; its towers alone."""
    from support import syncnet_weights
    from pcavs.metrics import lipsync
    from pcavs.metrics.evaluate import evaluate
    from pcavs.metrics.syncnet import load_syncnet

    weights = syncnet_weights.write(folder / "syncnet_v2.model")
    net = load_syncnet(weights)
    video = SYNCNET_KIT / "sync.mp4"
    row: dict = {"item": "second of video", "gflop_per_item": SYNCNET_GFLOP_PER_WINDOW * lipsync.FPS}
    with tempfile.TemporaryDirectory() as tmp:
        frames = lipsync.extract_frames(video, Path(tmp))
        samples = lipsync.extract_audio(video, Path(tmp))
        frames = frames[0 : len(frames)]  # decoded once, kept in memory: the towers alone below
    seconds_of_video = len(frames) / lipsync.FPS
    row["items"] = seconds_of_video
    towers = net if dtype == "float32" else _CastTowers(net, getattr(torch, dtype))
    lip, aud = lipsync.embed(towers, frames, samples)  # warm-up
    start = time.perf_counter()
    lip, aud = lipsync.embed(towers, frames, samples)
    windows = len(lip)
    row["towers_seconds_per_item"] = (time.perf_counter() - start) / windows * lipsync.FPS
    scores = lipsync.score(lip, aud)
    row.update(lse_d=scores.minval, lse_c=scores.conf, offset=scores.offset)
    if dtype == "float32":
        result = evaluate(video, syncnet=net, device="cpu", progress=False)  # warm-up of the whole route
        runs = []
        for _ in range(3):  # one run varies by about 8 % on a shared 2-core machine: the median of three
            result = evaluate(video, syncnet=net, device="cpu", progress=False)
            runs.append(result.seconds)
        row["seconds_per_item"] = statistics.median(runs) / seconds_of_video
        row["eval_lse_d"], row["eval_lse_c"] = result.lse_d, result.lse_c
    else:
        row["seconds_per_item"] = row["towers_seconds_per_item"]
        base = lipsync.score(*lipsync.embed(load_syncnet(weights), frames, samples))
        row["vs_float32"] = {"lse_d": abs(scores.minval - base.minval), "lse_c": abs(scores.conf - base.conf),
                             "offset_same": scores.offset == base.offset}
    row["peak_rss_mb"] = peak_rss_mb()
    return row


STAGES = {"generator": stage_generator, "gfpgan": stage_gfpgan, "syncnet": stage_syncnet}


def run_stage(args) -> None:
    """One row, in this process: the machine's peak in the row's dtype, then the stage, as JSON to --stage-out."""
    import json

    from pcavs.core.devices import reuse_freed_memory

    reuse_freed_memory()
    folder = Path(args.weights)
    dtype = getattr(torch, args.dtype)
    conv, matmul, convs = machine_throughput(torch.device("cpu"), dtype)
    if args.stage == "generator":
        row = stage_generator(folder, args.dtype, args.frames)
    elif args.stage == "gfpgan":
        row = stage_gfpgan(folder, args.dtype, args.faces)
    else:
        row = stage_syncnet(folder, args.dtype)
    after, _, _ = machine_throughput(torch.device("cpu"), dtype) if args.peak_after else (None, None, None)
    row.update(stage=args.stage, dtype=args.dtype, conv_peak=conv, conv_peak_after=after, matmul_peak=matmul,
               conv_shapes=convs)
    row["gflops"] = row["gflop_per_item"] / row["seconds_per_item"]
    row["ratio_conv"] = row["gflops"] / conv
    row["ratio_matmul"] = row["gflops"] / matmul
    Path(args.stage_out).write_text(json.dumps(row))


def format_row(row: dict) -> str:
    extra = ""
    if "vs_float32" in row:
        extra = " vs float32: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in row["vs_float32"].items())
    if row["stage"] == "syncnet":
        extra += f" LSE-D {row['lse_d']:.4f} LSE-C {row['lse_c']:.4f} offset {row['offset']}"
        if "towers_seconds_per_item" in row and row["dtype"] == "float32":
            extra += f"; towers alone {row['towers_seconds_per_item']:.3f} s"
    return (f"{row['stage']:<10}{row['dtype']:<10}{row['seconds_per_item']:>9.3f} s/{row['item']:<16}"
            f"{row['gflops']:>7.0f} {row['conv_peak']:>7.0f} {row['matmul_peak']:>7.0f} {row['ratio_conv']:>7.2f}"
            f"{row['peak_rss_mb']:>8.0f} MB{extra}")


def run_all(args) -> dict:
    """Every stage row, each in a fresh process of this script, one after the other; printed and returned."""
    import json
    import subprocess

    facts = cpu_facts()
    dtypes = ["float32"] + (["bfloat16"] if facts["mkldnn_bf16"] else [])
    print(f"CPU: {facts['model']}, {facts['cores']} cores, flags {' '.join(facts['flags'])}; torch {facts['torch']}, "
          f"{facts['threads']} threads; load average {facts['load_average']}")
    if not facts["mkldnn_bf16"]:
        print("no bf16 instructions (avx512_bf16 / amx_bf16): the bfloat16 rows are left out")
    rows = []
    print(f"\n{'stage':<10}{'dtype':<10}{'seconds per item':>26}{'GFLOP/s':>8}{'conv pk':>8}{'mm pk':>8}"
          f"{'ratio':>8}{'peak mem':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        synthesize_weights(folder)
        for stage in STAGES:
            for dtype in dtypes:
                out = folder / f"{stage}_{dtype}.json"
                command = [sys.executable, __file__, "--stage", stage, "--dtype", dtype, "--weights", str(folder),
                           "--stage-out", str(out), "--frames", str(args.frames), "--faces", str(args.faces)]
                subprocess.run(command, check=True)
                rows.append(json.loads(out.read_text()))
                print(format_row(rows[-1]), flush=True)
    facts["load_average_end"] = list(__import__("os").getloadavg())
    print(f"\nratio: the stage's useful GFLOP/s over the conv peak measured in its own process just before it; "
          f"load average at the end {facts['load_average_end']}")
    figures = {"machine": facts, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
        print(f"figures written to {args.json}")
    return figures


# ------------------------------------------------------------------ the GPU suite (--device cuda --all)


def gpu_suite(args) -> dict:
    """float16 / bfloat16 generator throughput over a batch sweep, torch.compile, streaming latency, a long voice."""
    import json

    import pcavs
    import stream as stream_bench

    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtypes = ("float16", "bfloat16") if on_gpu else ("float32", "bfloat16")
    batches = (1, 8, 32, 64, 128) if on_gpu else (1, 2)
    figures: dict = {"device": str(device), "sweep": [], "compile": {}, "gpu": torch.cuda.get_device_name(device)
                     if on_gpu else None}

    def sync():
        if on_gpu:
            torch.cuda.synchronize(device)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        synthesize_weights(folder)
        for dtype in dtypes:
            conv, matmul, _ = machine_throughput(device, getattr(torch, dtype))
            pipe = pcavs.Pipeline.from_pretrained(folder, device=args.device, dtype=dtype)
            G = pipe.networks.G
            for batch in batches:
                spatial = torch.randn(1, 512, 7, 7, device=device, dtype=getattr(torch, dtype))
                style = torch.randn(batch, 2560, device=device, dtype=getattr(torch, dtype))

                def step():
                    with torch.inference_mode():
                        G(spatial, style)
                    sync()

                seconds = timed(step, 3 if on_gpu else 1)
                rate = batch / seconds
                figures["sweep"].append({"dtype": dtype, "batch": batch, "frames_per_second": rate,
                                         "gflops": rate * GFLOP["G"], "ratio_conv": rate * GFLOP["G"] / conv,
                                         "conv_peak": conv, "matmul_peak": matmul})
                print(f"G {dtype:<9} batch {batch:>4}: {rate:8.1f} frames/s, {rate * GFLOP['G']:8.0f} GFLOP/s "
                      f"= {rate * GFLOP['G'] / conv:.2f} of conv peak ({conv:.0f})", flush=True)
        if not args.skip_compile:
            dtype = dtypes[0]
            compiled = pcavs.Pipeline.from_pretrained(folder, device=args.device, dtype=dtype, compile=True)
            batch = batches[-1]
            spatial = torch.randn(1, 512, 7, 7, device=device, dtype=getattr(torch, dtype))
            style = torch.randn(batch, 2560, device=device, dtype=getattr(torch, dtype))

            def compiled_step():
                with torch.inference_mode():
                    compiled.networks.G(spatial, style)
                sync()

            start = time.perf_counter()
            compiled_step()
            first = time.perf_counter() - start
            rate = batch / timed(compiled_step, 3 if on_gpu else 1)
            figures["compile"] = {"dtype": dtype, "batch": batch, "first_call_seconds": first, "frames_per_second": rate}
            print(f"torch.compile G {dtype} batch {batch}: {rate:.1f} frames/s (first call {first:.1f} s)")
        pipe = pcavs.Pipeline.from_pretrained(folder, device=args.device, dtype=dtypes[0])
        identity = str(KIT / "inputs" / "identity" / "000000.png")
        stream_bench.realtime_report(pipe, identity, stream_bench.voice(folder, args.stream_seconds), "crop")
        voice = stream_bench.voice(folder, args.voice_seconds)
        run_job(pipe, 8, folder, "crop", identity, True)  # warm-up
        start = time.perf_counter()
        result = pipe(face=identity, audio=voice, out=folder / "voice.mp4", mode="crop", progress=False,
                      return_frames=False)
        seconds = time.perf_counter() - start
        figures["voice"] = {"seconds_of_voice": args.voice_seconds, "frames": result.num_frames, "seconds": seconds}
        print(f"a {args.voice_seconds:g} s voice end to end (crop mode, {dtypes[0]}): {seconds:.1f} s, "
              f"{result.num_frames / seconds:.1f} frames/s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the generator")
    parser.add_argument("--full", action="store_true", help="also a full-mode job with a 1080p photo")
    parser.add_argument("--enhance", action="store_true", help="also GFPGAN's speed and the flicker it adds")
    parser.add_argument("--enhance-frames", type=int, default=8, help="frames of each --enhance job (default 8)")
    parser.add_argument("--all", action="store_true", help="every row of the speed table (or the GPU suite on cuda)")
    parser.add_argument("--json", default=None, help="with --all: write the figures to this JSON file")
    parser.add_argument("--faces", type=int, default=2, help="with --all: faces of each GFPGAN row (default 2)")
    parser.add_argument("--gpu-suite", action="store_true", help="the GPU suite on --device, even on the CPU")
    parser.add_argument("--voice-seconds", type=float, default=60.0, help="GPU suite: the end-to-end voice")
    parser.add_argument("--stream-seconds", type=float, default=10.0, help="GPU suite: the real-time voice")
    parser.add_argument("--skip-compile", action="store_true", help="GPU suite: leave torch.compile out")
    parser.add_argument("--stage", choices=tuple(STAGES), help=argparse.SUPPRESS)  # one --all row, in a child
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--stage-out", help=argparse.SUPPRESS)
    parser.add_argument("--peak-after", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if args.stage:
        return run_stage(args)
    if args.gpu_suite or (args.all and torch.device(args.device).type == "cuda"):
        gpu_suite(args)
        return
    if args.all:
        run_all(args)
        return
    import pcavs

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, dtype {args.dtype}, "
          f"batch {args.batch_size or 'default'}, compile {args.compile}")
    if device.type == "cpu":
        from pcavs.core.devices import reuse_freed_memory

        reuse_freed_memory()  # as a Pipeline on the CPU does, so both sides run with the same allocator
    conv, matmul, convs = machine_throughput(device, dtype)
    shapes = ", ".join(f"{name} {value:.0f}" for name, value in convs.items())
    print(f"machine ({args.dtype}): conv3x3 best {conv:.0f} GFLOP/s ({shapes}), matmul {matmul:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        synthesize_weights(folder)
        pipe = pcavs.Pipeline.from_pretrained(folder, device=args.device, dtype=args.dtype, compile=args.compile)
        if args.batch_size:
            pipe.default_batch_size = lambda: args.batch_size
        identity = KIT / "inputs" / "identity" / "000000.png"
        run_job(pipe, 8, folder, "crop", identity, True)  # warm-up (and compilation)
        result, total, stages = run_job(pipe, args.frames, folder, "crop", identity, True)
        report("crop mode, aligned inputs", result.num_frames, total, stages, min(12, result.num_frames), conv, matmul)
        if args.dtype != "float32":
            reference = pcavs.Pipeline.from_pretrained(folder, device=args.device)
            face = str(identity)
            ours = pipe(face=face, audio=KIT / "inputs" / "speech_short.wav", out=None, aligned=True, progress=False).faces
            base = reference(face=face, audio=KIT / "inputs" / "speech_short.wav", out=None, aligned=True, progress=False).faces
            diff = np.abs(ours.astype(int) - base.astype(int))
            print(f"{args.dtype} vs float32 output: max {diff.max()} levels, mean {diff.mean():.2f} levels per pixel")
        if args.full:
            result, total, stages = run_job(pipe, args.frames, folder, "full", photo_1080p(identity), False)
            report("full mode, 1080p photo, photo's own pose", result.num_frames, total, stages, 0, conv, matmul)
        if args.enhance:
            enhance_report(pipe, folder, photo_1080p(identity), args.enhance_frames)
    print(f"\npeak resident memory: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
