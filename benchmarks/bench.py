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
"""
from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
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
