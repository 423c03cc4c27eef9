"""Make the derived demo media in pcavs/assets/ (see DEMO_MEDIA.md).

    python tools/make_demo_media.py     # needs espeak-ng (apt install espeak-ng) for the speech

demo_speech.wav: espeak-ng speech, resampled to 16 kHz mono.
demo_pose.mp4: a gentle head motion made by warping demo_face.jpg (nod and tilt), 30 fps.
"""
from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pcavs.demo import ASSETS, DEMO_AUDIO, DEMO_FACE, DEMO_POSE  # noqa: E402
from pcavs.ffmpeg import ffmpeg_exe  # noqa: E402
from pcavs.images import read_image  # noqa: E402

TEXT = "Hello! This photo can talk."
POSE_SECONDS, POSE_FPS, POSE_SIZE = 2.4, 30, 448


def make_speech() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "175", "-w", str(raw), TEXT], check=True)
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(raw), "-ar", "16000", "-ac", "1",
                        "-c:a", "pcm_s16le", str(DEMO_AUDIO)], check=True)


def make_pose() -> None:
    face = read_image(DEMO_FACE)
    h, w = face.shape[:2]
    centre = (w * 0.45, h * 0.35)  # roughly the middle of the head
    frames = round(POSE_SECONDS * POSE_FPS)
    command = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{POSE_SIZE}x{POSE_SIZE}", "-r", str(POSE_FPS), "-i", "pipe:0",
               "-c:v", "libx264", "-crf", "26", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(DEMO_POSE)]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as proc:
        for i in range(frames):
            t = i / POSE_FPS
            angle = 7.0 * math.sin(2 * math.pi * t / POSE_SECONDS)
            nod = 0.03 * h * math.sin(4 * math.pi * t / POSE_SECONDS)
            matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
            matrix[1, 2] += nod
            moved = cv2.warpAffine(face, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
            proc.stdin.write(cv2.resize(moved, (POSE_SIZE, POSE_SIZE), interpolation=cv2.INTER_AREA).tobytes())
        proc.stdin.close()


if __name__ == "__main__":
    make_speech()
    make_pose()
    for path in sorted(ASSETS.glob("demo_*")):
        print(path.name, path.stat().st_size)
