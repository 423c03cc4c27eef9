"""Many videos from one jobs table: rows -> validated jobs -> an engine (this process, or Ray) -> a results table.

Both engines share everything in this module: reading and validating the rows, naming the
outputs, deciding that an output is already a complete video, running one row on a loaded
`Pipeline`, and the results table. `pcavs.batch_ray` only adds the workers and their faults.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import glob
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import InputError, PcavsError, WeightsError
from .options import MODEL_OPTIONS, Options, job_options, names as option_names

MEDIA_COLUMNS = ("face", "audio", "pose", "out")
RESULT_COLUMNS = ("row", "out", "status", "error", "frames", "seconds")
PATH_OPTIONS = ("mouth",)  # option columns holding a path, relative to the jobs file like the media columns
# the options that are no command-line flags (progress, return_frames, ...): off for every row,
# since a batch keeps no frames and shows one bar over the rows
NOT_PER_ROW = tuple(spec.name for spec in dataclasses.fields(Options) if not spec.metadata["cli"])
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v")
SAVE_EVERY = 5.0  # seconds between rewrites of the results table while rows finish
ERROR_CHARS = 300


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

def read_rows(jobs: str | os.PathLike | Sequence[Mapping[str, Any]]) -> tuple[list[tuple[int, dict[str, str]]], Path]:
    """(row number, {column: text}) for each row, and the folder relative paths start from."""
    if not isinstance(jobs, (str, os.PathLike)):
        rows = [(index, {str(k): "" if v is None else str(v) for k, v in dict(row).items()}) for index, row in enumerate(jobs)]
        if not rows:
            raise InputError("jobs: the list of jobs is empty")
        return rows, Path.cwd()
    path = Path(jobs)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = []
            for row in reader:
                if None in row:
                    raise InputError(f"{path}: row {reader.line_num} has more cells than the header has columns")
                if any((value or "").strip() for value in row.values()):  # blank lines are not jobs
                    rows.append((reader.line_num, {k.strip(): (v or "") for k, v in row.items()}))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the jobs file ({exc.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc}); save it as UTF-8 CSV") from None
    if not rows:
        raise InputError(f"{path}: needs a header such as face,audio,pose,out and at least one row")
    return rows, path.resolve().parent


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


def make_job(number: int, row: Mapping[str, str], base: Path, defaults: Options) -> Job:
    """One row -> a Job: paths resolved against `base`, row options over `defaults`, all of it validated."""

    def path(text: str | None) -> Path | None:
        text = (text or "").strip()
        return (base / Path(text).expanduser()).resolve() if text else None

    face, audio, pose = path(row.get("face")), path(row.get("audio")), path(row.get("pose"))
    given = {k: v.strip() for k, v in row.items() if k not in MEDIA_COLUMNS and v.strip()}
    for name in PATH_OPTIONS:
        if name in given:
            given[name] = str(path(given[name]))
    parsed = Options.from_strings(given)
    options = defaults.update(**{name: getattr(parsed, name) for name in given})
    if face is None:
        raise InputError("face: the cell is empty; give a photo")
    if audio is None and options.mouth is None:
        raise InputError("audio: the cell is empty; give a speech file (or a mouth video in a 'mouth' column)")
    out = path(row.get("out")) or default_out(face, audio, pose, base)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"out: {out.name}: the output must be an .mp4 (or .mov) file")
    return Job(number, face, audio, pose, out, options)


def load_jobs(jobs: str | os.PathLike | Sequence[Mapping[str, Any]], defaults: Options | None = None) -> list[Job]:
    """Every row as a validated Job, or one InputError naming the first bad row (before any work starts)."""
    rows, base = read_rows(jobs)
    where = str(jobs) if isinstance(jobs, (str, os.PathLike)) else "jobs"
    check_columns(dict.fromkeys(column for _, row in rows for column in row if column), where)
    defaults = (defaults or Options()).update(**dict.fromkeys(NOT_PER_ROW, False))
    made, bad = [], []
    for number, row in rows:
        try:
            made.append(make_job(number, row, base, defaults))
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

def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 3] + "..."


def remove_parts(out: Path) -> None:
    """Delete the hidden temporary files a killed writer of `out` left (VideoWriter's .<name>.<hex>.part)."""
    for part in glob.glob(os.path.join(glob.escape(str(out.parent)), "." + glob.escape(out.name) + ".*.part")):
        try:
            os.unlink(part)
        except OSError:
            pass


def decoded_frames(path: Path) -> int | None:
    """Frames of the first video stream that ffmpeg decodes without an error; None if it cannot."""
    from .ffmpeg import ffmpeg_exe, file_url

    try:
        run = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i", file_url(path),
             "-map", "0:v:0", "-f", "null", "-progress", "pipe:1", "-nostats", "-"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    counts = re.findall(rb"^frame=(\d+)", run.stdout, re.M)
    if run.returncode != 0 or run.stderr.strip() or not counts:
        return None
    return int(counts[-1])


def expected_frames(job: Job) -> int:
    """The frames a row's video has: one per 40 ms of its audio (as the pipeline counts them)."""
    from . import audio as audio_fe

    return audio_fe.num_frames(len(audio_fe.load_audio(job.audio if job.audio is not None else job.options.mouth)))


def complete_frames(job: Job) -> int | None:
    """The frame count of `job.out` when it is a complete video for this row (decodes whole, right length), else None."""
    if not job.out.is_file():
        return None
    frames = decoded_frames(job.out)
    if frames is None:
        return None
    try:
        return frames if frames == expected_frames(job) else None
    except PcavsError:  # the audio is unreadable now: the row must run (and fail) again
        return None


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
    """
    start = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def result(status: str, error: str = "", frames: int = 0) -> RowResult:
        return RowResult(job.row, str(job.out), status, one_line(error), frames,
                         round(time.perf_counter() - start, 2), worker, round(peak_memory_mb(), 1))

    def loaded():  # the row's seconds leave out a first model load
        nonlocal start
        began = time.perf_counter()
        model = pipeline()
        start += time.perf_counter() - began
        return model

    try:
        remove_parts(job.out)
        if not overwrite:
            frames = complete_frames(job)
            if frames is not None:
                return result("skipped", frames=frames)
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
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(RESULT_COLUMNS)
                for number in sorted(self.rows):
                    writer.writerow([getattr(self.rows[number], column) for column in RESULT_COLUMNS])
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PcavsError(f"{self.path}: cannot write the results table ({exc.strerror})") from None

    def close(self) -> BatchReport:
        self.bar.close()
        self.save()
        return BatchReport([self.rows[number] for number in sorted(self.rows)], self.path, self.total)


# ---- the entry point -----------------------------------------------------------------------------

def batch(
    jobs: str | os.PathLike | Sequence[Mapping[str, Any]],
    ray: str | None = None,
    *,
    workers: int | None = None,
    results: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    checkpoints: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str | None = None,
    compile: bool = False,
    **options: Any,
) -> BatchReport:
    """Run every row of a jobs table: a CSV file (columns face,audio,pose,out and any `generate` option) or a list of dicts.

    Relative paths are relative to the jobs file (to the working folder for a list). Every row
    is validated before any work starts. ray=None runs the rows here, one after another, with
    one model load; ray="auto" runs them on the Ray cluster named by $RAY_ADDRESS (or a local one
    it starts), ray="host:port" or "ray://host:10001" on that cluster, with `workers` workers
    (one GPU each where the cluster has GPUs). Rows whose `out` already is a complete video are
    skipped unless overwrite=True. A row that fails is recorded with its reason and the others
    go on. The results table (row,out,status,error,frames,seconds) goes to `results`, by default
    <jobs>.results.csv beside a jobs file. `options` are the defaults for every row
    (mode, noise, seed, pose_loop, ...); the row's own cells win.
    """
    loaded = load_jobs(jobs, job_options(**options))
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers: {workers!r} must be a positive whole number")
    if workers is not None and ray is None:
        raise InputError("workers: the number of workers is for the Ray engine; add --ray (ray='auto')")
    if ray is not None:
        from .batch_ray import import_ray

        import_ray()  # before anything is written: without Ray, say how to install it
    model = dict(checkpoints=checkpoints, device=device, dtype=dtype, compile=compile)
    table = Results(results_path(jobs, results), len(loaded), progress)
    try:
        if ray is None:
            run_local(loaded, model, overwrite, table.add)
        else:
            from .batch_ray import run_ray

            run_ray(loaded, model, overwrite, table.add, address=ray, workers=workers)
    finally:
        report = table.close()
    return report


def run_local(jobs: list[Job], model: dict, overwrite: bool, done: Callable[[RowResult], None]) -> None:
    """The local engine: the rows one after another in this process, the networks loaded once (on first need)."""
    from .pipeline import Pipeline

    loaded: list = []

    def pipeline():
        if not loaded:
            loaded.append(Pipeline.from_pretrained(**model))
        return loaded[0]

    for job in jobs:
        done(run_job(pipeline, job, overwrite))
