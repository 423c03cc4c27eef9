"""Rebuild the bundled demo media in pcavs/assets/ (provenance and licences: pcavs/assets/DEMO_MEDIA.md).

    python tools/make_demo_media.py                       # all three files
    python tools/make_demo_media.py --only speech pose    # some of them
    python tools/make_demo_media.py --skimage-wheel /tmp/ski/scikit_image-0.26.0-....whl

demo_face.jpg    NASA's public-domain portrait of Eileen Collins, the ``skimage/data/astronaut.png`` that ships
                 inside the scikit-image wheel (fetched with ``pip download --no-deps``; scikit-image is not a
                 dependency), re-saved as a 512x512 JPEG.
demo_speech.wav  English speech synthesized with espeak-ng (``apt install espeak-ng``), resampled to 16 kHz mono PCM16.
demo_pose.mp4    a gentle head motion (tilt and nod) made by warping demo_face.jpg frame by frame, H.264, 30 fps.

Only a maintainer runs this; the outputs are committed and CI never needs espeak-ng or scikit-image.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pcavs.core.assets import ASSETS, DEMO_AUDIO, DEMO_FACE, DEMO_POSE  # noqa: E402

# The photo: the member of the scikit-image wheel, and the digest it has had in every release we checked.
SKIMAGE_MEMBER = "skimage/data/astronaut.png"
ASTRONAUT_SHA256 = "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"
FACE_JPEG_QUALITY = 90

# The speech.
TEXT = "Hello! This photo can talk."
VOICE, WORDS_PER_MINUTE = "en-us", 160
SPEECH_RATE = 16000

# The head motion: one full period of every component over the clip, so it also loops without a jump.
POSE_SECONDS, POSE_FPS, POSE_SIZE = 2.4, 30, 448
TILT_DEGREES = 7.0      # roll, left and right once
NOD_FRACTION = 0.025    # vertical shift, as a fraction of the photo's height, down and up twice
NOD_SCALE = 0.015       # the head comes a little closer at the bottom of each nod
SWAY_FRACTION = 0.01    # a slight sideways sway, following the tilt
PIVOT = (0.45, 0.35)    # rotation centre as fractions of (width, height): the neck, under the chin
POSE_CRF = 26


def run(args: list[str]) -> None:
    subprocess.run(args, check=True)


def ffmpeg() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def fetch_skimage_wheel(folder: Path) -> Path:
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
         "-d", str(folder), "scikit-image"])
    wheels = sorted(folder.glob("scikit_image-*.whl"))
    if not wheels:
        raise SystemExit("pip download gave no scikit-image wheel")
    return wheels[-1]


def make_face(wheel: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel or fetch_skimage_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            png = archive.read(SKIMAGE_MEMBER)
    digest = hashlib.sha256(png).hexdigest()
    if digest != ASTRONAUT_SHA256:
        print(f"warning: {SKIMAGE_MEMBER} in {wheel.name} has sha256 {digest}, not the one we used before",
              file=sys.stderr)
    photo = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if photo is None or photo.shape != (512, 512, 3):
        raise SystemExit(f"{SKIMAGE_MEMBER} is not the 512x512 colour photo we expect")
    ok, jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, FACE_JPEG_QUALITY])
    if not ok:
        raise SystemExit("JPEG encoding failed")
    DEMO_FACE.write_bytes(jpeg.tobytes())


def make_speech() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        run(["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(raw), TEXT])
        # -bitexact and no metadata: a plain 44-byte RIFF header, the same bytes from any ffmpeg build
        run([ffmpeg(), "-y", "-loglevel", "error", "-i", str(raw), "-map_metadata", "-1", "-fflags", "+bitexact",
             "-ar", str(SPEECH_RATE), "-ac", "1", "-c:a", "pcm_s16le", "-bitexact", str(DEMO_AUDIO)])


def head_motion(t: float, width: int, height: int) -> np.ndarray:
    """The 2x3 affine matrix that moves the photo's head at time ``t`` (seconds)."""
    phase = 2 * math.pi * t / POSE_SECONDS
    angle = TILT_DEGREES * math.sin(phase)
    nod = math.sin(2 * phase)  # -1..1, twice per clip
    scale = 1.0 + NOD_SCALE * max(nod, 0.0)
    matrix = cv2.getRotationMatrix2D((width * PIVOT[0], height * PIVOT[1]), angle, scale)
    matrix[0, 2] += SWAY_FRACTION * width * math.sin(phase)
    matrix[1, 2] += NOD_FRACTION * height * nod
    return matrix


def make_pose() -> None:
    photo = cv2.cvtColor(cv2.imread(str(DEMO_FACE), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    height, width = photo.shape[:2]
    frames = round(POSE_SECONDS * POSE_FPS)
    command = [ffmpeg(), "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{POSE_SIZE}x{POSE_SIZE}", "-r", str(POSE_FPS),
               "-i", "pipe:0", "-an", "-map_metadata", "-1", "-fflags", "+bitexact",
               "-c:v", "libx264", "-preset", "slow", "-crf", str(POSE_CRF), "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", str(DEMO_POSE)]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as encoder:
        assert encoder.stdin is not None
        for i in range(frames):
            moved = cv2.warpAffine(photo, head_motion(i / POSE_FPS, width, height), (width, height),
                                   flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
            small = cv2.resize(moved, (POSE_SIZE, POSE_SIZE), interpolation=cv2.INTER_AREA)
            encoder.stdin.write(np.ascontiguousarray(small).tobytes())
        encoder.stdin.close()
    if encoder.returncode:
        raise SystemExit(f"ffmpeg failed with exit status {encoder.returncode}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=["face", "speech", "pose"], default=["face", "speech", "pose"])
    parser.add_argument("--skimage-wheel", type=Path,
                        help="a scikit-image wheel already downloaded (else pip downloads one)")
    args = parser.parse_args(argv)
    if "face" in args.only:
        make_face(args.skimage_wheel)
    if "speech" in args.only:
        make_speech()
    if "pose" in args.only:  # after the face: the clip is made from it
        make_pose()
    for path in sorted(ASSETS.glob("demo_*")):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
