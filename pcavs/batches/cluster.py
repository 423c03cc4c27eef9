"""The Ray engine of `pcavs batch`: workers (Ray actors) that load the networks once and take rows one at a time.

Frames never pass through Ray: a worker reads a row's inputs and writes its video on the
shared filesystem itself (atomically, through VideoWriter) and returns a small RowResult.
A worker that dies mid-row (killed, out of memory, its node lost) is replaced, and its row
runs again on another worker, at most MAX_RETRIES times; the dead writer's temporary file
is removed. A row still running at its time limit is stopped the same way (its worker is
killed and replaced) and fails. A WeightsError, at a worker's start or in a row, stops the
batch, as it does on the local engine. Ctrl-C stops every worker and keeps the videos already
finished.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable

from ..core.errors import InputError, PcavsError, WeightsError, one_line
from ..core.files import join_run, remove_parts
from ..generation.pipeline import Pipeline
from ..models.weights import find_checkpoints
from .jobs import ERROR_CHARS, Job, RowResult, row_limit, run_job, timed_out

MAX_RETRIES = 2  # runs of a row after the first, when its worker dies under it
CPU_THREADS = 4  # threads per CPU worker when the number of workers is not given
WAIT = 1.0  # seconds per wait for a finished row: how soon Ctrl-C and a row past its time limit are seen
INSTALL = 'pip install "pcavs[ray]"'


def import_ray():
    """The `ray` module, or a one-line InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"ray: the Ray engine needs Ray, which is not installed; {INSTALL}") from None
    return ray


class Worker:
    """One worker: a Pipeline loaded once, then rows one after another (run as a Ray actor)."""

    def __init__(self, model: dict, threads: int | None, run: str):
        join_run(run)
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.pipeline, self.error = None, None
        try:
            self.pipeline = Pipeline.from_pretrained(**model)
        except PcavsError as exc:  # reported by ready(): the batch stops with it
            self.error = exc

    def ready(self) -> PcavsError | None:
        """None once the networks are loaded, else why they could not be."""
        return self.error

    def run(self, job: Job, overwrite: bool) -> RowResult:
        return run_job(lambda: self.pipeline, job, overwrite)


def plan(resources: dict, node_cpus: list[float], workers: int | None) -> tuple[int, dict, int | None]:
    """(workers, actor resources, torch threads): one GPU each on a GPU cluster, else the CPUs shared out."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return workers or gpus, {"num_gpus": 1, "num_cpus": 1}, None
    cpus = int(resources.get("CPU", 1))
    count = workers or max(1, cpus // CPU_THREADS)
    nodes = [int(n) for n in node_cpus] or [cpus]
    per = max(1, cpus // count)
    while per > 1 and sum(n // per for n in nodes) < count:  # each worker's CPUs must fit on one node
        per -= 1
    return count, {"num_cpus": per}, per


def connect(ray, address: str) -> bool:
    """Join the cluster at `address` ('auto': $RAY_ADDRESS, a `ray start` cluster here, or a new local one).

    True when this call connected (and so should disconnect); False when Ray was already initialized.
    """
    if ray.is_initialized():
        return False
    try:
        ray.init(address=None if address == "auto" else address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "the cluster" if address == "auto" else f"the Ray cluster at {address}"
        raise PcavsError(f"ray: cannot connect to {where} ({one_line(exc, 160)}); "
                         "check the address, or leave it out to start Ray on this machine") from None
    return True


def worker_model(model: dict, gpus: bool) -> dict:
    """The model arguments as a worker takes them: weights resolved here when this machine can see them."""
    model = dict(model)
    try:
        model["checkpoints"] = str(find_checkpoints(model["checkpoints"]).resolve())
    except PcavsError:  # not visible here: each worker looks for its own
        pass
    if gpus and str(model.get("device", "")).startswith("cuda:"):
        model["device"] = "cuda"  # Ray gives each worker one GPU, seen as cuda:0
    return model


def run_ray(jobs: list[Job], model: dict, overwrite: bool, done: Callable[[RowResult], None], *, run: str,
            row_timeout: float | None, address: str = "auto", workers: int | None = None) -> None:
    """Run `jobs` on Ray workers, calling `done(result)` as each row finishes (in finishing order).

    `run` is the batch's id (its workers' temporary files carry it); `row_timeout` as for `pcavs.batch`."""
    ray = import_ray()
    owned = connect(ray, address)
    try:
        node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
        count, resources, threads = plan(ray.cluster_resources(), node_cpus, workers)
        actor, arguments = ray.remote(Worker).options(**resources), worker_model(model, "num_gpus" in resources)
        start = lambda: actor.remote(arguments, threads, run)  # noqa: E731
        Dispatcher(ray, start, min(count, len(jobs)), overwrite, done, run, row_timeout).run(jobs)
    finally:
        if owned:
            ray.shutdown()


class Dispatcher:
    """Hands rows to idle workers, one at a time each; replaces dead workers and requeues their rows."""

    def __init__(self, ray, start: Callable, size: int, overwrite: bool, done: Callable[[RowResult], None], run: str,
                 row_timeout: float | None):
        self.ray, self.start, self.size, self.overwrite, self.done = ray, start, size, overwrite, done
        self.run_id, self.row_timeout = run, row_timeout
        self.loading: dict = {}  # ready() reference -> worker
        self.running: dict = {}  # run() reference -> (worker, job)
        self.deadlines: dict = {}  # run() reference -> (time.monotonic() when the row is stopped, its limit)
        self.idle: list = []
        self.attempts: dict[int, int] = {}
        self.load_deaths = 0

    def run(self, jobs: list[Job]) -> None:
        queue = deque(jobs)
        try:
            for _ in range(self.size):
                self._spawn()
            while queue or self.running:
                while self.idle and queue:
                    worker, job = self.idle.pop(), queue.popleft()
                    limit = row_limit(job, self.row_timeout)
                    ref = self._submit(worker, job)
                    self.running[ref] = (worker, job)
                    self.deadlines[ref] = (time.monotonic() + limit, limit)
                finished, _ = self.ray.wait(list(self.running) + list(self.loading), num_returns=1, timeout=WAIT)
                for ref in finished:
                    if ref in self.loading:
                        self._loaded(ref)
                    else:
                        self._finished(ref, queue)
                self._stop_late()
        finally:
            self._stop_all()

    def _spawn(self) -> None:
        worker = self.start()
        self.loading[worker.ready.remote()] = worker

    def _submit(self, worker, job: Job):
        return worker.run.remote(job, self.overwrite)

    def _loaded(self, ref) -> None:
        worker = self.loading.pop(ref)
        try:
            error = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # died while loading (out of memory, node lost)
            self.load_deaths += 1
            if self.load_deaths > self.size * (MAX_RETRIES + 1):
                raise PcavsError(f"ray: workers keep dying while loading the model ({actor_reason(exc)}); "
                                 "check the workers' memory and logs") from None
            self._kill(worker)
            self._spawn()
            return
        if error is not None:
            raise error  # the weights: no row can run anywhere
        self.idle.append(worker)

    def _stop_late(self) -> None:
        """Fail the rows past their time limit: their workers are killed (with what the row was writing) and replaced."""
        now = time.monotonic()
        for ref in [ref for ref, (deadline, _) in self.deadlines.items() if deadline <= now]:
            worker, job = self.running.pop(ref)
            _, limit = self.deadlines.pop(ref)
            self._kill(worker)
            remove_parts(job.out, self.run_id)
            self.done(timed_out(job, limit))
            self._spawn()

    def _finished(self, ref, queue: deque) -> None:
        worker, job = self.running.pop(ref)
        self.deadlines.pop(ref)
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:  # raised past run_job: a failure of this row, not the worker's
            cause = getattr(exc, "cause", None)
            if isinstance(cause, WeightsError):  # as on the local engine: no row can run, the batch stops
                raise WeightsError(str(cause)) from None
            reason = one_line(f"internal error: {cause or exc}", ERROR_CHARS)
            self.done(RowResult(job.row, str(job.out), "failed", reason))
            self.idle.append(worker)
            return
        except self.ray.exceptions.RayError as exc:  # the worker died under the row
            self._kill(worker)
            remove_parts(job.out, self.run_id)
            tries = self.attempts.get(job.row, 0) + 1
            self.attempts[job.row] = tries
            if tries > MAX_RETRIES:
                self.done(RowResult(job.row, str(job.out), "failed",
                                    one_line(f"its worker died {tries} times while running it ({actor_reason(exc)})", ERROR_CHARS)))
            else:
                queue.appendleft(job)  # next, on another worker
            self._spawn()
            return
        self.done(result)
        self.idle.append(worker)

    def _kill(self, worker) -> None:
        try:
            self.ray.kill(worker)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _stop_all(self) -> None:
        """Kill every worker (Ctrl-C, an error, or the end); rows cut short leave no temporary files."""
        for worker in self.idle + list(self.loading.values()) + [w for w, _ in self.running.values()]:
            self._kill(worker)
        for _, job in self.running.values():
            remove_parts(job.out, self.run_id)
        self.idle, self.loading, self.running, self.deadlines = [], {}, {}, {}


def actor_reason(exc: BaseException) -> str:
    """The telling line of a Ray error ("...killed by `ray.kill`", "...node died")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("The actor") or "died" in line or "killed" in line or "memory" in line.lower():
            return line[:160]
    return (lines[0] if lines else type(exc).__name__)[:160]

