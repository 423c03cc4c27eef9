"""Jobs tables for the batch tests: short voices (5-10 frames), aligned 224 crops, a missing face, a corrupt audio."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from support.kits import INPUTS
from support.media import tone, write_video
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


STALLED = "stalled"  # a file whose name holds this never finishes loading under stalling_ffmpeg()
STALL_SECONDS = 317  # how long such an ffmpeg sleeps (an uncommon number, to find leftover processes by)


def stalling_ffmpeg(folder: Path) -> Path:
    """An ffmpeg that hangs, as on a stalled disk or network mount, when its arguments name a STALLED file, and
    is the real one otherwise. Point $IMAGEIO_FFMPEG_EXE at it before a worker process starts."""
    from pcavs.media.ffmpeg import ffmpeg_exe

    script = folder / "ffmpeg"
    script.write_text(f'#!/bin/sh\ncase "$*" in *{STALLED}*) exec sleep {STALL_SECONDS} ;; esac\n'
                      f'exec "{ffmpeg_exe()}" "$@"\n')
    script.chmod(0o755)
    return script


def stalled_sleepers() -> list[int]:
    """Processes of stalling_ffmpeg() still sleeping (ids): a stopped row must leave none."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == ["sleep", str(STALL_SECONDS)]:
            found.append(process.pid)
    return found


def hung_rows(folder: Path) -> Path:
    """folder/jobs.csv: a row that hangs under stalling_ffmpeg(), one whose output already is complete, and one
    with a missing face: after the hung row is stopped, the other two take seconds and no frame is generated."""
    stalled, short = voice(folder, 0.2, name=f"{STALLED} voice.wav"), voice(folder, 0.08)
    write_video(folder / "made.mp4", [np.full((224, 224, 3), 100, np.uint8)] * 2, 25)  # 2 frames: 80 ms of audio
    return write_jobs(folder / "jobs.csv", [dict(face=FACE, audio=stalled, out="hung.mp4"),
                                            dict(face=FACE, audio=short, out="made.mp4"),
                                            dict(face="missing.png", audio=short, out="never.mp4")])


def check_hung_rows(folder: Path, table: dict[int, dict[str, str]], limit: float) -> None:
    """What hung_rows() must give: the hung row stopped at `limit`, and the batch gone on past it."""
    assert [table[row]["status"] for row in (2, 3, 4)] == ["failed", "skipped", "failed"], table
    assert table[2]["error"].startswith(f"stopped after {limit:g} s (the row timeout)") and "\n" not in table[2]["error"]
    assert "missing.png: file not found" in table[4]["error"]
    assert not (folder / "hung.mp4").exists() and not (folder / "never.mp4").exists()
    assert stalled_sleepers() == []  # the hung ffmpeg was stopped with its worker
