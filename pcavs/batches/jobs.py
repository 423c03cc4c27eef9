"""What both batch engines share: the rows of a jobs table as validated jobs, the name of each output,
whether an output already is a complete video, one row run on a loaded `Pipeline`, how long a row may
run, and the results table.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import math
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..core.errors import InputError, PcavsError, WeightsError, one_line
from ..core.facts import FPS
from ..core.files import AtomicFile
from ..core.options import MODEL_OPTIONS, Options, names as option_names
from ..core.tables import Table, read_table
from ..media.audio import load_speech
from ..media.ffmpeg import WHOLE, file_url, run
from ..media.probe import probe
from ..models.mel import num_frames

MEDIA_COLUMNS = ("face", "audio", "pose", "out")
RESULT_COLUMNS = ("row", "out", "status", "error", "frames", "seconds")
PATH_OPTIONS = ("mouth", "enhance_checkpoint")  # option columns holding a path, relative to the jobs file like the media columns
# the options that are no command-line flags (progress, return_frames, ...): off for every row,
# since a batch keeps no frames and shows one bar over the rows
NOT_PER_ROW = tuple(spec.name for spec in dataclasses.fields(Options) if not spec.metadata["cli"])
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v")
SAVE_EVERY = 5.0  # seconds between rewrites of the results table while rows finish
ERROR_CHARS = 300  # a row's error in the results table
# The automatic row timeout: every row gets ROW_TIMEOUT_BASE seconds (reading and aligning its inputs) plus, per
# frame of its audio, about 15 times the generator's time per frame on a 2-core CPU (far more on a GPU), or
# with enhance= the same margin over GFPGAN's 5.7 times the generator's cost.
ROW_TIMEOUT_BASE = 600.0
ROW_TIMEOUT_PER_FRAME = 10.0
ROW_TIMEOUT_PER_RESTORED_FRAME = 50.0


@dataclass(frozen=True)
class Job:
    """One validated row: absolute paths and the options it runs with."""

    row: int  # the row's line in the jobs file (the header is line 1); a list's index for in-memory jobs
    face: Path
    audio: Path | None
    pose: Path | None
    out: Path
    options: Options


@dataclass
class RowResult:
    """What became of one row (the first six fields are the results table's columns)."""

    row: int
    out: str
    status: str  # "done", "skipped" or "failed"
    error: str = ""
    frames: int = 0
    seconds: float = 0.0
    worker: str = ""  # host:pid of the process that ran it
    peak_mb: float = 0.0  # that process's peak resident memory so far (MiB; 0 where the OS does not say)


@dataclass
class BatchReport:
    """Every row's result, in row order, and where the results table was written."""

    rows: list[RowResult]
    results: Path | None
    total: int = 0  # rows in the jobs table (more than len(rows) after an interrupt)

    def count(self, status: str) -> int:
        return sum(1 for result in self.rows if result.status == status)

    @property
    def failed(self) -> list[RowResult]:
        return [result for result in self.rows if result.status == "failed"]

    def summary(self) -> str:
        where = f"; results in {self.results}" if self.results else ""
        return (f"{self.count('done')} done, {self.count('skipped')} skipped, {self.count('failed')} failed "
                f"of {self.total} rows{where}")


# ---- rows -> jobs -------------------------------------------------------------------------------

def check_columns(columns: Iterable[str], where: str) -> None:
    """The media columns, and any job option but the batch-wide ones; a misspelling names the closest column."""
    columns = list(columns)
    if "face" not in columns:
        raise InputError(f"{where}: has no 'face' column; the header needs face,audio (pose,out and options optional)")
    allowed = MEDIA_COLUMNS + tuple(name for name in option_names() if name not in NOT_PER_ROW)
    for column in columns:
        if column in allowed:
            continue
        if column in MODEL_OPTIONS or column in NOT_PER_ROW:
            flag = "--" + column.replace("_", "-")
            raise InputError(f"{where}: column {column!r} cannot vary by row; remove it (for {column}, use {flag} "
                             "on the command line or the batch() argument)")
        close = difflib.get_close_matches(column, allowed, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"columns: {', '.join(allowed)}"
        raise InputError(f"{where}: unknown column {column!r}; {hint}")


def default_out(face: Path, audio: Path | None, pose: Path | None, base: Path) -> Path:
    """The output of a row without `out`: <face>_<audio>[_<pose>].mp4 in the jobs file's folder."""
    parts = [face.stem, audio.stem if audio else None, pose.stem if pose else None]
    return base / ("_".join(part for part in parts if part) + ".mp4")


def make_job(number: int, row: Mapping[str, str], table: Table, defaults: Options) -> Job:
    """One row -> a Job: paths resolved by the table, row options over `defaults`, all of it validated."""
    face, audio, pose = table.path(row.get("face")), table.path(row.get("audio")), table.path(row.get("pose"))
    given = {k: v for k, v in row.items() if k not in MEDIA_COLUMNS and v}
    for name in PATH_OPTIONS:
        if name in given:
            given[name] = str(table.path(given[name]))
    parsed = Options.from_strings(given)
    options = defaults.update(**{name: getattr(parsed, name) for name in given})
    if face is None:
        raise InputError("face: the cell is empty; give a photo")
    if audio is None and options.mouth is None:
        raise InputError("audio: the cell is empty; give a speech file (or a mouth video in a 'mouth' column)")
    out = table.path(row.get("out")) or default_out(face, audio, pose, table.base)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"out: {out.name}: the output must be an .mp4 (or .mov) file")
    return Job(number, face, audio, pose, out, options)


def load_jobs(jobs: str | os.PathLike | Sequence[Mapping[str, Any]], defaults: Options | None = None) -> list[Job]:
    """Every row as a validated Job, or one InputError naming the first bad row (before any work starts)."""
    table = read_table(jobs, "face,audio (pose,out and options optional)")
    where = table.name
    check_columns(table.columns, where)
    defaults = (defaults or Options()).update(**dict.fromkeys(NOT_PER_ROW, False))
    made, bad = [], []
    for number, row in table.rows:
        try:
            made.append(make_job(number, row, table, defaults))
        except InputError as exc:
            bad.append(f"row {number}: {exc}")
    seen: dict[Path, int] = {}
    for job in made:
        if job.out in seen:
            bad.append(f"rows {seen[job.out]} and {job.row} both write {job.out}; give each row its own 'out'")
        seen.setdefault(job.out, job.row)
    if bad:
        more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise InputError(f"{where}: {bad[0]}{more}; fix the jobs table, nothing was run")
    return made


def results_path(jobs: str | os.PathLike | Sequence, results: str | os.PathLike | None) -> Path | None:
    """--results, else <jobs>.results.csv beside a jobs file; None for an in-memory list without `results`."""
    if results is not None:
        return Path(results)
    if isinstance(jobs, (str, os.PathLike)):
        path = Path(jobs)
        return path.with_name(path.stem + ".results.csv")
    return None


# ---- one row -------------------------------------------------------------------------------------

def decoded_frames(path: Path) -> int | None:
    """Frames of the first video stream that ffmpeg decodes without an error; None if it cannot."""
    try:
        done = run(["-xerror", "-i", file_url(path), "-map", "0:v:0", "-f", "null", "-progress", "pipe:1", "-nostats", "-"],
                   WHOLE)
    except (OSError, subprocess.TimeoutExpired):
        return None
    counts = re.findall(rb"^frame=(\d+)", done.stdout, re.M)
    if done.returncode != 0 or done.stderr.strip() or not counts:
        return None
    return int(counts[-1])


def expected_frames(job: Job) -> int:
    """The frames a row's video has: one per 40 ms of its audio (as the pipeline counts them)."""
    return num_frames(len(load_speech(job.audio if job.audio is not None else job.options.mouth)))


def complete_frames(job: Job) -> int | None:
    """The frame count of `job.out` when it is a complete video for this row (decodes whole, right length), else None.

    An unreadable audio raises its InputError: the row fails for it without running.
    """
    if not job.out.is_file():
        return None
    frames = decoded_frames(job.out)
    if frames is None:
        return None
    return frames if frames == expected_frames(job) else None


def check_timeout(row_timeout: float | None) -> None:
    """A row timeout is a positive number of seconds, or None (automatic)."""
    if row_timeout is not None and (isinstance(row_timeout, bool) or not isinstance(row_timeout, (int, float))
                                    or not row_timeout > 0 or row_timeout != row_timeout):
        raise InputError(f"row_timeout: {row_timeout!r} must be a positive number of seconds")


def row_limit(job: Job, row_timeout: float | None) -> float:
    """The seconds `job` may run (its model load left out): `row_timeout`, or when None ROW_TIMEOUT_BASE plus
    ROW_TIMEOUT_PER_FRAME per frame of its audio (ROW_TIMEOUT_PER_RESTORED_FRAME with enhance=)."""
    if row_timeout is not None:
        return float(row_timeout)
    try:
        seconds = probe(job.audio if job.audio is not None else job.options.mouth).duration or 0.0
    except PcavsError:  # unreadable: the row fails on its own, quickly
        seconds = 0.0
    per_frame = ROW_TIMEOUT_PER_RESTORED_FRAME if job.options.enhance else ROW_TIMEOUT_PER_FRAME
    return ROW_TIMEOUT_BASE + per_frame * math.ceil(seconds * FPS)


def timed_out(job: Job, limit: float) -> RowResult:
    """The result of a row stopped at its time limit."""
    return RowResult(job.row, str(job.out), "failed",
                     one_line(f"stopped after {limit:g} s (the row timeout): it may be hung; "
                              "if it is only slow, give a longer --row-timeout", ERROR_CHARS), seconds=round(limit, 2))


def peak_memory_mb() -> float:
    """This process's peak resident memory (VmHWM), MiB; 0 where /proc does not say."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_job(pipeline: Callable[[], Any], job: Job, overwrite: bool) -> RowResult:
    """Run one row on the pipeline `pipeline()` gives (loaded on first need): done, skipped or failed.

    A bad input fails the row with a one-line reason; WeightsError (no row can run) and
    KeyboardInterrupt propagate. The video appears at `job.out` only complete (VideoWriter).
    Without `overwrite`, a complete video at `job.out` skips the row, and anything else there
    (a video cut short, another file) is kept and fails the row.
    """
    start = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def result(status: str, error: str = "", frames: int = 0) -> RowResult:
        return RowResult(job.row, str(job.out), status, one_line(error, ERROR_CHARS), frames,
                         round(time.perf_counter() - start, 2), worker, round(peak_memory_mb(), 1))

    def loaded():  # the row's seconds leave out a first model load
        nonlocal start
        began = time.perf_counter()
        model = pipeline()
        start += time.perf_counter() - began
        return model

    try:
        if not overwrite and os.path.lexists(job.out):
            frames = complete_frames(job)
            if frames is not None:
                return result("skipped", frames=frames)
            return result("failed", f"out: {job.out} already exists and is not a complete video for this row; "
                                    "it is kept: move it away, or give --overwrite (overwrite=True) to replace it")
        job.out.parent.mkdir(parents=True, exist_ok=True)
        made = loaded().run(job.face, job.audio, job.pose, job.out, job.options)
        return result("done", frames=made.num_frames)
    except WeightsError:
        raise
    except PcavsError as exc:
        return result("failed", str(exc))
    except OSError as exc:
        return result("failed", f"{exc.filename or job.out}: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - one row's internal failure must not stop the other rows
        return result("failed", f"internal error: {type(exc).__name__}: {exc}")


# ---- the results table and the progress bar ------------------------------------------------------

class Results:
    """Collects RowResults as rows finish: the bar over rows, and the table rewritten atomically now and then."""

    def __init__(self, path: Path | None, total: int, progress: bool):
        from tqdm.auto import tqdm

        self.path = path
        self.total = total
        self.rows: dict[int, RowResult] = {}
        self.saved = time.monotonic()
        self.bar = tqdm(total=total, unit="row", desc="pcavs batch", disable=not progress, file=sys.stderr)
        if path is not None and not path.absolute().parent.is_dir():
            raise InputError(f"results: folder {path.absolute().parent} does not exist; create it or choose another path")

    def add(self, result: RowResult) -> None:
        self.rows[result.row] = result
        self.bar.update(1)
        self.bar.set_postfix(done=self._count("done"), skipped=self._count("skipped"), failed=self._count("failed"),
                             refresh=False)
        if time.monotonic() - self.saved >= SAVE_EVERY:
            self.save()

    def _count(self, status: str) -> int:
        return sum(1 for result in self.rows.values() if result.status == status)

    def save(self) -> None:
        self.saved = time.monotonic()
        if self.path is None:
            return
        try:
            with AtomicFile(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(RESULT_COLUMNS)
                for number in sorted(self.rows):
                    writer.writerow([getattr(self.rows[number], column) for column in RESULT_COLUMNS])
        except OSError as exc:
            raise PcavsError(f"{self.path}: cannot write the results table ({exc.strerror})") from None

    def close(self) -> BatchReport:
        self.bar.close()
        self.save()
        return BatchReport([self.rows[number] for number in sorted(self.rows)], self.path, self.total)
