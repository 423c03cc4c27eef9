"""Jobs tables for the batch tests: short voices (5-10 frames), aligned 224 crops, a missing face, a corrupt audio."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from support.kits import INPUTS
from support.media import tone
from pcavs.media.video import iter_frames

FACE = str(INPUTS / "identity" / "000000.png")
POSE = str(INPUTS / "pose")
RATE = 16000


def voice(folder: Path, seconds: float, name: str | None = None) -> str:
    """A wav of `seconds` (0.2 s = 5 frames) in `folder`; returns its file name."""
    name = name or f"voice{round(seconds * 1000)}.wav"
    sf.write(folder / name, tone(seconds, RATE), RATE)
    return name


def corrupt(folder: Path) -> str:
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    return "corrupt.wav"


def write_jobs(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def six_rows(folder: Path) -> Path:
    """folder/jobs.csv: four good rows (crop mode by default, one grid with a pose folder, one random noise),
    a missing face and a corrupt audio; outputs under folder/out/."""
    short, longer = voice(folder, 0.2), voice(folder, 0.32)
    bad = corrupt(folder)
    return write_jobs(folder / "jobs.csv", [
        dict(face=FACE, audio=short, pose="", out="out/a.mp4"),
        dict(face=FACE, audio=longer, pose=POSE, out="out/b.mp4", mode="grid"),
        dict(face="missing.png", audio=short, pose="", out="out/c.mp4"),
        dict(face=FACE, audio=short, pose="", out="out/d.mp4", noise="random", seed="7"),
        dict(face=FACE, audio=bad, pose="", out="out/e.mp4"),
        dict(face=FACE, audio=longer, pose=POSE, out="out/f.mp4", pose_loop="loop"),
    ])


GOOD = {2: "a.mp4", 3: "b.mp4", 5: "d.mp4", 7: "f.mp4"}  # row (line in jobs.csv) -> output
BAD = {4: "missing.png", 6: "corrupt.wav"}


def read_results(path: Path) -> dict[int, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {int(row["row"]): row for row in csv.DictReader(handle)}


def frames(path: Path) -> np.ndarray:
    return np.stack(list(iter_frames(path)))


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files (a writer's .part) anywhere under `folder`."""
    return sorted(str(p) for p in folder.rglob(".*.part"))
