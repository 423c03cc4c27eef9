"""Soak: many short jobs through one Pipeline; resident memory and open file handles must stay flat.

    python benchmarks/soak.py [--jobs 200]

Each job: the conformance kit's aligned face, 40 ms of speech (one frame), crop mode,
written to an mp4 through ffmpeg, so decoding, the networks, encoding and the atomic
rename all run every time. Prints memory and open descriptors at job 1, the middle and the end.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import KIT, synthesize_weights  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    import pcavs

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        synthesize_weights(folder)
        pipe = pcavs.Pipeline.from_pretrained(folder, device="cpu")
        speech, rate = sf.read(KIT / "inputs" / "speech.wav", dtype="float32")
        audio = folder / "one_frame.wav"
        sf.write(audio, speech[8000:8640], rate)
        face = KIT / "inputs" / "identity" / "000000.png"
        marks = {1, args.jobs // 2, args.jobs}
        start = time.perf_counter()
        print(f"{'job':>5}{'RSS MB':>9}{'open fds':>10}{'files left':>12}{'s/job':>8}")
        for job in range(1, args.jobs + 1):
            out = folder / "soak.mp4"
            pipe(face=face, audio=audio, out=out, aligned=True, mode="crop", progress=False)
            if job in marks:
                left = len(list(folder.iterdir()))
                print(f"{job:>5}{rss_mb():>9.0f}{open_fds():>10}{left:>12}{(time.perf_counter() - start) / job:>8.2f}")


if __name__ == "__main__":
    main()
