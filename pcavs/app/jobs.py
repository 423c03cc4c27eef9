"""The server's devices and its one queue: every video job and every Live recording waits here for a device,
in order, each client holding at most `per_client` places; then runs on that device's own thread.

`Devices` owns the loaded pipelines and their threads, and Live's work on them (`LiveWork`); `Queue` hands out
their slots; `Videos` keeps the
jobs of the page and the HTTP API: their status, the frames made so far (for the page's player and the
frame stream), the mp4, and cancelling.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import itertools
import queue
import secrets
import shutil
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from ..core.errors import InputError, PcavsError, one_line, renamed
from ..media.audio import SPEECH_RATE
from .limits import Limits

RESULT_NAME = "talking_face.mp4"
POLL = 0.25  # s between looks at a cancelled or timed-out job


class Cancelled(Exception):
    """The job or recording was cancelled (by its client, a disconnection or the time limit)."""


@dataclass
class Slot:
    """One place to run work: a pipeline (or a remote handle standing for one) and its own thread."""

    pipeline: Any
    thread: ThreadPoolExecutor


# (pipeline, inputs, options, folder, stage) -> the events of a video job, on the slot's thread
Work = Callable[[Any, "Inputs", Any, Path, Callable[[str], None]], Iterator[tuple]]
LiveFrame = tuple[int, np.ndarray, float, int, float]  # index, RGB image, latency (s), frames dropped so far, work (s)


class Backend(Protocol):
    """Where jobs run: this process's pipelines, or replicas behind Ray Serve (app/cluster.py).

    `work` makes a video job on a slot (a `Work`; None: `make_video` on the slot's pipeline, in this process);
    `live` makes a Live recording's frames on a slot's thread.
    """

    device_type: str
    work: Work | None

    def slots(self) -> list[Slot]: ...

    def live(self, pipeline: Any, photo: Path, audio: Iterator[np.ndarray]) -> Iterator[LiveFrame]:
        """The frames of `photo` speaking `audio` (16 kHz mono chunks, as they come) in real time, on the slot of
        `pipeline`; no audio at all: the avatar prepared, no frame."""

    def close(self) -> None: ...


def read_photo(photo: Path) -> bytes:
    """The bytes of Live's photo, or a one-line InputError when it is gone."""
    try:
        return photo.read_bytes()
    except OSError:
        raise InputError(f"photo: {photo.name} is gone from the server; choose the photo again") from None


class LiveWork:
    """Live on a device: the pipeline it runs there (bfloat16 on CPUs with bf16 instructions, unless `dtype` says
    otherwise; the same pipeline where that is its own precision) and the avatars prepared on it (the last KEEP
    photos, by content). `Devices` has one; so has each Ray Serve replica (cluster.py)."""

    KEEP = 8

    def __init__(self, dtype: str | None):
        self.dtype = dtype
        self._made: dict[int, Any] = {}
        self._prepared: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def runner(self, pipeline: Any) -> Any:
        """The pipeline Live runs on `pipeline`'s device."""
        from ..core.devices import resolve_dtype
        from ..generation.pipeline import Pipeline

        wanted = resolve_dtype(self.dtype, pipeline.device) if self.dtype else pipeline.dtype
        if wanted == pipeline.dtype:
            return pipeline
        with self._lock:
            if id(pipeline) not in self._made:
                self._made[id(pipeline)] = Pipeline(copy.deepcopy(pipeline.networks), pipeline.device, wanted)
            return self._made[id(pipeline)]

    def avatar(self, photo: Path, runner: Any) -> Any:
        """The avatar of `photo` on `runner` (detected, aligned and encoded once)."""
        key = (hashlib.sha256(read_photo(photo)).hexdigest(), id(runner))
        with self._lock:
            if key in self._prepared:
                self._prepared.move_to_end(key)
                return self._prepared[key]
        avatar = runner.prepare(photo, mode="crop")
        with self._lock:
            self._prepared[key] = avatar
            while len(self._prepared) > self.KEEP:
                self._prepared.popitem(last=False)
        return avatar

    def frames(self, pipeline: Any, photo: Path, audio: Iterator[np.ndarray]) -> Iterator[LiveFrame]:
        """`Backend.live` on `pipeline`'s device, here."""
        runner = self.runner(pipeline)
        avatar = self.avatar(photo, runner)
        chunks = iter(audio)
        first = next(chunks, None)
        if first is None:  # no audio: the avatar alone
            return
        stream = runner.stream(avatar, itertools.chain([first], chunks), sample_rate=SPEECH_RATE, realtime=True,
                               mode="crop", progress=False)
        for frame in stream:
            yield frame.index, frame.image, stream.latency, stream.dropped, stream.work


class Devices:
    """The loaded pipelines, one per device, each run by `concurrency` threads of its own.

    The networks always run on these threads, never on the web server's: each thread keeps the memory
    its jobs freed for its next job (see core/devices.py), so memory grows with this fixed number of
    threads, not with the number of requests served.
    """

    work = None  # make_video, here

    def __init__(self, pipelines: list, concurrency: int, live_dtype: str | None = "auto"):
        if concurrency < 1:
            raise InputError(f"concurrency: {concurrency} must be 1 or more (jobs at a time per device)")
        self.pipelines = pipelines
        self.device_type = pipelines[0].device.type
        self.live_work = LiveWork(live_dtype)
        self._slots = [Slot(p, ThreadPoolExecutor(1, thread_name_prefix=f"pcavs-{p.device}-{n}"))
                       for n in range(concurrency) for p in pipelines]

    def slots(self) -> list[Slot]:
        return list(self._slots)

    def live(self, pipeline: Any, photo: Path, audio: Iterator[np.ndarray]) -> Iterator[LiveFrame]:
        return self.live_work.frames(pipeline, photo, audio)

    def warm(self, work: Callable[[Any], None]) -> None:
        """Run `work(pipeline)` first on every slot's thread (in the background: a job that comes sooner waits for it)."""
        for slot in self._slots:
            slot.thread.submit(work, slot.pipeline)

    def close(self) -> None:
        for slot in self._slots:
            slot.thread.shutdown(wait=False)
        self._slots.clear()
        self.pipelines.clear()


def relay(source: Iterator, put: Callable[[Any], None], stop: threading.Event) -> None:
    """Each item of `source` handed to `put`, until it ends or `stop` is set; `source` is closed either way."""
    try:
        for item in source:
            put(item)
            if stop.is_set():
                break
    finally:
        getattr(source, "close", lambda: None)()


def hand_over(work: Callable[[Callable[[Any], None]], None], put: Callable[[tuple[bool, Any]], None]) -> None:
    """Run `work(give)` for a consumer on another thread: each item given is put as (True, item), then (False, None)
    when the work ends or (False, its exception) when it fails (see `ended`)."""
    try:
        work(lambda item: put((True, item)))
        put((False, None))
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
        put((False, exc))


def ended(more: bool, value: Any) -> bool:
    """Whether `hand_over`'s (more, value) ends the items; the work's exception is raised here."""
    if more:
        return False
    if value is not None:
        raise value
    return True


def run_on(slot: Slot, work: Callable[[Any], Iterator], stop: threading.Event) -> Iterator:
    """The items of `work(slot.pipeline)`, made on the slot's thread as they are taken here. Setting `stop` (or
    leaving early) ends the work at its next item; the slot is free again when this generator has closed."""
    items: queue.SimpleQueue = queue.SimpleQueue()
    done = slot.thread.submit(hand_over, lambda give: relay(work(slot.pipeline), give, stop), items.put)
    try:
        while True:
            try:
                more, value = items.get(timeout=POLL)
            except queue.Empty:
                if stop.is_set():
                    raise Cancelled() from None
                continue
            if ended(more, value):
                return
            yield value
    finally:
        stop.set()
        done.result()


@dataclass
class Ticket:
    """A place in the queue: whose it is, and the slot once it has one."""

    client: str
    what: str  # "job" or "live"
    stop: threading.Event = field(default_factory=threading.Event)
    slot: Slot | None = None


class Queue:
    """The one queue of a server: first come, first served, at most `size` waiting and `per_client` places
    (waiting or running) per client."""

    def __init__(self, backend: Backend, size: int, per_client: int):
        if size < 1:
            raise InputError(f"queue: {size} must be 1 or more (jobs waiting at most)")
        self.backend = backend
        self.size = size
        self.per_client = per_client
        self._free = backend.slots()
        self.slots = len(self._free)
        self._waiting: list[Ticket] = []
        self._running: list[Ticket] = []
        self._changed = threading.Condition()

    def join(self, client: str, what: str = "job") -> Ticket:
        """A place for `client`; InputError when the queue is full or the client already holds its places."""
        with self._changed:
            # a stopped ticket (cancelled, or its work over) no longer holds its client's place, though it may still
            # hold its slot until its work stops: a client told "done" or "cancelled" may send its next request now
            held = sum(t.client == client and not t.stop.is_set() for t in self._waiting + self._running)
            if held >= self.per_client:
                raise InputError(f"you already have {held} requests queued or running, the most this server allows "
                                 "one client; wait for one to finish or cancel it")
            if len(self._waiting) >= self.size and not self._free:
                raise InputError(f"the queue is full ({len(self._waiting)} waiting); try again in a minute")
            ticket = Ticket(client, what)
            self._waiting.append(ticket)
            self._grant()
            return ticket

    def withdraw(self, ticket: Ticket) -> None:
        """Stop `ticket`; one still waiting leaves the queue at once (one running leaves when its work stops)."""
        with self._changed:
            ticket.stop.set()
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            self._changed.notify_all()

    def position(self, ticket: Ticket) -> int | None:
        """How many are ahead of `ticket` (0: next), or None once it runs or has left."""
        with self._changed:
            return self._waiting.index(ticket) if ticket in self._waiting else None

    def wait(self, ticket: Ticket, deadline: float) -> Slot:
        """Block until `ticket` has a slot; Cancelled when it is stopped or `deadline` (monotonic) passes first."""
        with self._changed:
            while ticket.slot is None:
                if ticket.stop.is_set() or time.monotonic() > deadline or ticket not in self._waiting:
                    raise Cancelled()
                self._changed.wait(POLL)
            return ticket.slot

    def leave(self, ticket: Ticket) -> None:
        """Give back the place and the slot of `ticket` (safe to call twice)."""
        with self._changed:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            if ticket in self._running:
                self._running.remove(ticket)
                self._free.append(ticket.slot)
            self._grant()
            self._changed.notify_all()

    def counts(self) -> tuple[int, int]:
        """(waiting, running)."""
        with self._changed:
            return len(self._waiting), len(self._running)

    def _grant(self) -> None:
        while self._free and self._waiting:
            ticket = self._waiting.pop(0)
            ticket.slot = self._free.pop(0)
            self._running.append(ticket)
        self._changed.notify_all()

    @contextlib.contextmanager
    def place(self, client: str, what: str, deadline: float) -> Iterator[Ticket]:
        """Join, wait for a slot, and leave when the block ends."""
        ticket = self.join(client, what)
        try:
            self.wait(ticket, deadline)
            yield ticket
        finally:
            self.leave(ticket)


@dataclass
class Inputs:
    """One video request's files (already checked against the limits) and the names the user knows them by."""

    face: Path
    voice: Path  # the decoded 16 kHz wav
    pose: Path | None
    shown: dict[str, str]  # server path -> the user's own file name, for error messages


@dataclass
class Video:
    """One video job: its state, the frames made so far (JPEG), and the mp4 when done."""

    id: str
    client: str
    folder: Path
    ticket: Ticket | None = None
    status: str = "queued"  # queued, running, done, failed, cancelled
    stage: str = "waiting for the device"
    frames: int = 0
    total: int | None = None
    error: str | None = None
    video: Path | None = None
    started: float = field(default_factory=time.monotonic)
    _jpegs: list[bytes] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def ended(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    def update(self, **changes: Any) -> None:
        with self._changed:
            for name, value in changes.items():
                setattr(self, name, value)
            self._changed.notify_all()

    def add_frame(self, index: int, jpeg: bytes, total: int | None) -> None:
        with self._changed:
            self._jpegs.append(jpeg)
            self.frames, self.total, self.stage = index + 1, total, "making frames"
            self._changed.notify_all()

    def follow(self, start: int = 0, wait: float = 1.0) -> Iterator[tuple[int, bytes] | None]:
        """The frames from `start` as they are made: (index, jpeg), or None each `wait` seconds without one
        (a chance to send the status); ends when the job ends."""
        index = start
        while True:
            with self._changed:
                if index >= len(self._jpegs) and not self.ended:
                    self._changed.wait(wait)
                ready = self._jpegs[index:]
                ended = self.ended
            for jpeg in ready:
                yield index, jpeg
                index += 1
            if ended and index >= len(self._jpegs):
                return
            if not ready:
                yield None

    def wait(self, timeout: float) -> bool:
        """Block until the job ends or `timeout` passes; whether it has ended."""
        with self._changed:
            self._changed.wait_for(lambda: self.ended, timeout)
            return self.ended

    def summary(self, position: int | None) -> dict[str, Any]:
        """The job as the HTTP API shows it."""
        progress = self.frames / self.total if self.total else (1.0 if self.status == "done" else 0.0)
        return {"id": self.id, "status": self.status, "stage": self.stage, "progress": round(progress, 4),
                "frames": self.frames, "total": self.total, "error": self.error, "position": position}


class Videos:
    """The video jobs of one server, each run on its own thread: wait for a slot, then make the frames there."""

    def __init__(self, queue_: Queue, limits: Limits, requests: Path, work: Work):
        self.queue = queue_
        self.limits = limits
        self.requests = requests
        self.work = work  # (pipeline, inputs, options, folder, stage) -> events, on the device's thread
        self._jobs: dict[str, Video] = {}
        self._lock = threading.Lock()

    def new(self, client: str) -> Video:
        """A job and its folder (under the server's requests folder), before its inputs are checked."""
        job_id = secrets.token_urlsafe(16)
        folder = self.requests / job_id
        folder.mkdir(parents=True)
        job = Video(job_id, client, folder)
        with self._lock:
            self._jobs[job_id] = job
        return job

    def start(self, job: Video, inputs: Inputs, options: Any) -> None:
        """Queue the job (InputError, and the job forgotten, when the queue refuses it) and run it when its turn comes."""
        try:
            job.ticket = self.queue.join(job.client)
        except InputError:
            self.delete(job.id)
            raise
        threading.Thread(target=self._run, args=(job, inputs, options), name=f"pcavs-job-{job.id[:6]}",
                         daemon=True).start()

    def get(self, job_id: str) -> Video | None:
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Video) -> int | None:
        return self.queue.position(job.ticket) if job.ticket is not None else None

    def cancel(self, job: Video, reason: str = "cancelled") -> None:
        """Stop the job (its place is freed at once, its device at the next frame)."""
        if not job.ended:
            job.update(status="cancelled", error=reason)
        if job.ticket is not None:
            self.queue.withdraw(job.ticket)

    def delete(self, job_id: str) -> None:
        """Cancel the job and remove it and its folder."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is not None:
            idle = job.status in ("done", "failed") or job.ticket is None or job.ticket.slot is None
            self.cancel(job)
            if idle:  # nothing runs in the folder (a running job's own thread removes it when it stops)
                shutil.rmtree(job.folder, ignore_errors=True)

    def sweep(self, max_age: float) -> None:
        """Forget ended jobs older than `max_age` seconds, and their folders."""
        now = time.monotonic()
        with self._lock:
            old = [j for j in self._jobs.values() if j.ended and now - j.started > max_age]
        for job in old:
            self.delete(job.id)

    def close(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            self.cancel(job, "the server stopped")

    def _run(self, job: Video, inputs: Inputs, options: Any) -> None:
        ticket = job.ticket
        deadline = job.started + self.limits.job_timeout
        try:
            slot = self.queue.wait(ticket, deadline)
            job.update(status="running", stage="finding the face")
            events = run_on(slot, lambda pipeline: self.work(pipeline, inputs, options, job.folder, lambda text: job.update(stage=text)), ticket.stop)
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire, (job,))
            timer.start()
            try:
                for event in events:
                    kind = event[0]
                    if kind == "frame":
                        job.add_frame(*event[1:])
                    elif kind == "stage":
                        job.update(stage=event[1])
                    elif kind == "video":
                        job.update(video=event[1])
            finally:
                timer.cancel()
            if job.status == "running":
                job.update(status="done", stage="done", _jpegs=[])
        except Cancelled:
            if job.status != "cancelled":
                job.update(status="cancelled", error=f"the job ran past this server's {self.limits.job_timeout:g} s limit")
        except PcavsError as exc:
            job.update(status="failed", error=renamed(one_line(exc), inputs.shown))
        except MemoryError:
            job.update(status="failed", error="out of memory: send a shorter voice or a smaller batch_size")
        except Exception as exc:  # noqa: BLE001 - one job's bug must not stop the server; the log keeps it
            import logging

            logging.getLogger("pcavs.serve").error("internal error in job %s:\n%s", job.id, traceback.format_exc())
            text = one_line(exc)
            if "can't allocate memory" in text or "not enough memory" in text:
                text = "out of memory: send a shorter voice or a smaller batch_size"
            else:
                text = f"internal error: {type(exc).__name__}: {text}"
            job.update(status="failed", error=renamed(text, inputs.shown))
        finally:
            self.queue.leave(ticket)
            if job.status in ("cancelled", "failed"):
                job.update(_jpegs=[])
                shutil.rmtree(job.folder, ignore_errors=True)
                with self._lock:
                    if job.status == "cancelled":
                        self._jobs.pop(job.id, None)

    def _expire(self, job: Video) -> None:
        self.cancel(job, f"the job ran past this server's {self.limits.job_timeout:g} s limit")
