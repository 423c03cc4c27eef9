"""Pose-video preprocessing speed and memory: decode, detect and align a 1080p head-motion video.

    python benchmarks/pose_video.py [--seconds 10] [--fps 30]

Builds a 1920x1080 video of the conformance kit's face moving (made here with ffmpeg), then
streams it through decoding at 25 fps, the LiteRT detector and alignment (two passes), and
prints seconds of work per second of video and the peak resident memory.
"""
from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KIT = ROOT / "tests" / "data" / "pcavs"


def make_video(path: Path, seconds: float, fps: int) -> None:
    from pcavs.media.ffmpeg import ffmpeg_exe

    face = cv2.cvtColor(cv2.imread(str(KIT / "inputs" / "identity" / "000000.png")), cv2.COLOR_BGR2RGB)
    command = [ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "1920x1080",
               "-r", str(fps), "-i", "pipe:0", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as proc:
        for i in range(round(seconds * fps)):
            t = i / fps
            matrix = cv2.getRotationMatrix2D((112, 112), 8 * math.sin(t), 3.0 + 0.2 * math.sin(0.7 * t))
            matrix[:, 2] += (800 + 60 * math.sin(0.5 * t), 250 + 30 * math.cos(0.8 * t))
            frame = np.full((1080, 1920, 3), 110, np.uint8)
            mask = cv2.warpAffine(np.ones((224, 224), np.uint8), matrix, (1920, 1080))[:, :, None] > 0
            proc.stdin.write(np.where(mask, cv2.warpAffine(face, matrix, (1920, 1080)), frame).tobytes())
        proc.stdin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    from pcavs.faces.align import align_frames
    from pcavs.faces.detect import get_detector
    from pcavs.media.video import iter_frames

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pose_1080p.mp4"
        make_video(path, args.seconds, args.fps)
        detector = get_detector()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        count = sum(1 for _ in align_frames(lambda: iter_frames(path), detector))
        elapsed = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.seconds:.0f} s of 1080p at {args.fps} fps -> {count} aligned crops at 25 fps in {elapsed:.1f} s")
    print(f"preprocessing: {elapsed / args.seconds:.2f} s per second of video ({count / elapsed:.1f} frames/s)")
    print(f"peak resident memory: {peak:.0f} MB (before the video: {before:.0f} MB)")


if __name__ == "__main__":
    main()
