"""Batch: one jobs table of short rows through the local engine and the Ray engine on this machine.

    python benchmarks/batch.py [--rows 20] [--workers 2] [--engines local,ray] [--checkpoints DIR]

Each row: the conformance kit's aligned face and a speech-like voice of 0.2 s or 0.28 s
(5 or 7 frames), crop mode. Each engine runs in a fresh process (the Ray one starts its own
local cluster, which counts in its time) and reports the wall time, the time to the first
finished video, each worker's peak resident memory, and the fit seconds = s/frame x frames +
per-row cost. Then the fault table: six rows with a missing face and a corrupt audio on Ray.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared" / "conformance"
FACE = KIT / "inputs" / "identity" / "000000.png"
RATE = 16000
LENGTHS = (0.2, 0.28)  # seconds of voice: 5 and 7 frames


def voice(path: Path, seconds: float) -> None:
    import soundfile as sf

    t = np.arange(round(seconds * RATE)) / RATE
    signal = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((220, 440, 660), 1))
    sf.write(path, (0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * signal).astype(np.float32), RATE)


def make_jobs(folder: Path, rows: int) -> Path:
    for seconds in LENGTHS:
        voice(folder / f"v{round(seconds * 100)}.wav", seconds)
    with open(folder / "jobs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["face", "audio", "pose", "out"])
        for row in range(rows):
            writer.writerow([FACE, f"v{round(LENGTHS[row % 2] * 100)}.wav", "", f"out/{row:03d}.mp4"])
    return folder / "jobs.csv"


def make_fault_jobs(folder: Path) -> Path:
    voice(folder / "v20.wav", 0.2)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    rows = [(FACE, "v20.wav", "a"), (FACE, "v20.wav", "b"), ("missing.png", "v20.wav", "c"),
            (FACE, "v20.wav", "d"), (FACE, "corrupt.wav", "e"), (FACE, "v20.wav", "f")]
    with open(folder / "faults.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["face", "audio", "out"])
        writer.writerows([face, audio, f"out/{name}.mp4"] for face, audio, name in rows)
    return folder / "faults.csv"


def first_video(folder: Path, started: float, found: list) -> None:
    """Note when the first .mp4 appears under `folder` (VideoWriter renames only finished ones into place)."""
    while not found:
        if any(folder.rglob("*.mp4")):
            found.append(time.perf_counter() - started)
            return
        time.sleep(0.05)


def child(engine: str, jobs: str, checkpoints: str, workers: int) -> None:
    """Run one engine in this process and print a JSON line of what it measured."""
    import pcavs

    found: list = []
    started = time.perf_counter()
    watcher = threading.Thread(target=first_video, args=(Path(jobs).parent, started, found), daemon=True)
    watcher.start()
    report = pcavs.batch(jobs, ray=None if engine == "local" else "auto", workers=None if engine == "local" else workers,
                         aligned=True, mode="crop", checkpoints=checkpoints, device="cpu", progress=False, overwrite=True)
    wall = time.perf_counter() - started
    found.append(None)
    peaks: dict[str, float] = {}
    for row in report.rows:
        peaks[row.worker] = max(peaks.get(row.worker, 0.0), row.peak_mb)
    done = [row for row in report.rows if row.status == "done"]
    fit = np.polyfit([row.frames for row in done], [row.seconds for row in done], 1) if len({r.frames for r in done}) > 1 else (0, 0)
    print(json.dumps(dict(engine=engine, wall=wall, first=found[0], peaks=peaks, summary=report.summary(),
                          frames=sum(row.frames for row in done), per_frame=fit[0], per_row=fit[1],
                          row_seconds=sum(row.seconds for row in done))))


def run_child(engine: str, jobs: Path, checkpoints: str, workers: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, __file__, "--child", engine, str(jobs), checkpoints, str(workers)],
                          capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def synthesize(folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench import synthesize_weights

    synthesize_weights(folder)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    if len(sys.argv) > 1 and sys.argv[1] == "--synthesize":
        return synthesize(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--checkpoints", help="weights folder (default: synthesized from the conformance kit)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoints = args.checkpoints
        if checkpoints is None:
            (folder / "weights").mkdir()
            subprocess.run([sys.executable, __file__, "--synthesize", str(folder / "weights")], check=True)
            checkpoints = str(folder / "weights")
        for engine in args.engines.split(","):
            (folder / engine).mkdir()
            result = run_child(engine, make_jobs(folder / engine, args.rows), checkpoints, args.workers)
            peaks = ", ".join(f"{mb:.0f}" for mb in result["peaks"].values())
            print(f"{engine:5s}: {result['summary'].split(';')[0]}; wall {result['wall']:.1f} s, first video at "
                  f"{result['first']:.1f} s, {result['frames']} frames, {result['per_frame']:.2f} s/frame + "
                  f"{result['per_row']:.2f} s/row per worker, peak memory per worker {peaks} MiB; "
                  f"load average {os.getloadavg()[0]:.1f}")
        if "ray" in args.engines:
            (folder / "faults").mkdir()
            jobs = make_fault_jobs(folder / "faults")
            run_child("ray", jobs, checkpoints, args.workers)
            print("fault table (Ray):")
            print((folder / "faults" / "faults.results.csv").read_text().replace(str(folder), "<tmp>"))


if __name__ == "__main__":
    main()
