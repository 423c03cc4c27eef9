"""Streaming on this machine: how soon a video plays, real time, and what an avatar saves. Prints figures, asserts nothing.

    python benchmarks/stream.py [--seconds 10] [--device cpu|cuda] [--mode crop|full|grid] [--short 2]

1. Segments: a --seconds voice (the kit's speech, repeated) through `Pipeline.stream(...).segments(...)`: the
   time until the first ~1 s segment is playable against the time until the finished mp4; what the segment
   writer costs per 1 s segment of 224x224 frames.
2. Real time: the same voice played as a live source (`realtime=True` on the file: its samples arrive at
   the audio clock): latency from a frame's audio being spoken to the frame coming out, the frame rate
   reached, and the frames dropped.
3. Avatars: `prepare` (the bundled photo and head-motion video: detection, alignment, identity and pose
   codes) against a whole job on them with a --short voice, and that job again from the avatar.

The face of 1 and 2 is the conformance kit's aligned crop (tests/data/pcavs), weights synthesized by the
kit's rule (tests/support/pcavs_weights.py): the same networks and the same work as the released ones.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "tests" / "data" / "pcavs"
sys.path.insert(0, str(ROOT / "tests"))


def voice(folder: Path, seconds: float) -> Path:
    speech, rate = sf.read(KIT / "inputs" / "speech.wav", dtype="float32")
    repeated = np.tile(speech, int(np.ceil(seconds * rate / len(speech))))[: int(seconds * rate)]
    path = folder / f"voice_{seconds:g}s.wav"
    sf.write(path, repeated, rate)
    return path


def segments_report(pipe, face: str, audio: Path, folder: Path, mode: str) -> float:
    start = time.perf_counter()
    stream = pipe.stream(face, audio, aligned=True, mode=mode)
    times = [time.perf_counter() - start for _ in stream.segments(folder / "segments", out=folder / "whole.mp4")]
    total = time.perf_counter() - start
    print(f"\n## 1. Segments: {stream.frames} frames ({stream.frames / 25:.1f} s of video), mode={mode}")
    print(f"first segment playable after {times[0]:.1f} s; finished mp4 after {total:.1f} s "
          f"({times[0] / total:.1%} of the wait); {len(times)} segments, one every "
          f"{statistics.median(np.diff(times)):.1f} s (median)")
    return total


def writer_cost(folder: Path) -> None:
    from pcavs.media.segments import SegmentWriter

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) // 4 + 96 for _ in range(25)]
    costs = []
    with SegmentWriter(folder / "cost", out=folder / "cost.mp4") as writer:
        for second in range(8):
            start = time.perf_counter()
            for frame in frames:
                writer.write(frame, np.zeros(640, np.float32))
            costs.append(time.perf_counter() - start)
        writer.finish()
    print(f"segment writer: {1000 * statistics.median(costs[1:]):.0f} ms per 1 s segment of 224x224 "
          f"(median of 7; PyAV {__import__('av').__version__})")


def realtime_report(pipe, face: str, audio: Path, mode: str) -> None:
    stream = pipe.stream(face, audio, aligned=True, mode=mode, realtime=True)
    start = time.perf_counter()
    latencies = []
    for _ in stream:
        latencies.append(stream.latency)
    seconds = time.perf_counter() - start
    made = len(latencies)
    print(f"\n## 2. Real time: a {stream.total / 25:.1f} s voice arriving at the audio clock, "
          f"batch {pipe.default_batch_size(realtime=True)}")
    print(f"latency audio in -> frame out: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
          f"(lookahead {pipe.lookahead:.2f} s included); {made} frames made in {seconds:.1f} s: "
          f"{made / seconds:.2f} frames/s; {stream.dropped} of {stream.total} dropped")


def avatar_report(pipe, folder: Path, short: float, whole_job: float) -> None:
    from pcavs.core.assets import DEMO_FACE, DEMO_POSE

    audio = voice(folder, short)
    start = time.perf_counter()
    avatar = pipe.prepare(DEMO_FACE, DEMO_POSE)
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    pipe(DEMO_FACE, audio, DEMO_POSE, out=folder / "photo.mp4", progress=False)
    from_photo = time.perf_counter() - start
    start = time.perf_counter()
    pipe(avatar, audio, out=folder / "avatar.mp4", progress=False)
    from_avatar = time.perf_counter() - start
    print(f"\n## 3. Avatars: the bundled photo and its {len(avatar.pose_codes)}-frame head-motion video")
    print(f"prepare: {prepared:.1f} s; a {short:g} s job from the photo: {from_photo:.1f} s, from the avatar: "
          f"{from_avatar:.1f} s (saves {from_photo - from_avatar:.1f} s, {1 - from_avatar / from_photo:.0%}); "
          f"prepare is {prepared / whole_job:.1%} of the job of part 1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="the voice of parts 1 and 2")
    parser.add_argument("--short", type=float, default=2.0, help="the voice of part 3")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", default="crop", choices=("crop", "full", "grid"))
    args = parser.parse_args()

    import torch

    import pcavs
    from support.pcavs_weights import write_checkpoints

    face = str(KIT / "inputs" / "identity" / "000000.png")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        write_checkpoints(folder / "weights")
        pipe = pcavs.Pipeline.from_pretrained(folder / "weights", device=args.device)
        print(f"# pcavs stream benchmark: {pipe.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        audio = voice(folder, args.seconds)
        warm = pipe.stream(face, audio, aligned=True, mode=args.mode)
        next(warm)  # first-call costs out of the figures
        warm.close()
        whole = segments_report(pipe, face, audio, folder, args.mode)
        writer_cost(folder)
        realtime_report(pipe, face, audio, args.mode)
        avatar_report(pipe, folder, args.short, whole)


if __name__ == "__main__":
    main()
