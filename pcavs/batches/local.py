"""The local engine of `pcavs batch`: one worker process on this machine that loads the networks once (on the
first row that needs them) and runs the rows one after another.

Why a process: a row can hang where nothing in Python reaches it (a read from a stalled disk or
network mount, an ffmpeg that never answers, a native thread pool or a device kernel that never
returns), and only ending the process that runs it is sure to stop it and free its CPU, memory
and device. So this process hands each row to the worker and waits for its result at most the
row's time limit; past it, the worker is killed with everything it started (its own process
group), the row fails, its temporary file is removed and a new worker takes the next row. A
worker that dies under a row (killed, out of memory) fails that row the same way. The Ray engine
stops a hung row alike, by killing its actor.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Callable

from ..core.errors import WeightsError, one_line
from ..core.files import join_run, remove_parts
from .jobs import ERROR_CHARS, Job, RowResult, row_limit, run_job, timed_out


def serve(rows: Connection, results: Connection) -> None:
    """The worker process: (model, run id) first, then (job, overwrite) pairs in and messages out until the
    engine closes the pipe: ("ready",) once started, ("loaded",) after the networks load (on the first row
    that needs them), ("result", RowResult), ("weights", WeightsError)."""
    model, run = rows.recv()
    join_run(run)
    from ..generation.pipeline import Pipeline

    results.send(("ready",))

    loaded: list = []

    def pipeline():
        if not loaded:
            loaded.append(Pipeline.from_pretrained(**model))
            results.send(("loaded",))
        return loaded[0]

    while True:
        try:
            job, overwrite = rows.recv()
        except EOFError:
            return
        try:
            results.send(("result", run_job(pipeline, job, overwrite)))
        except WeightsError as exc:
            results.send(("weights", exc))


class Worker:
    """The engine's handle on one worker process.

    It is a fresh interpreter (`python -m pcavs.batches.local`), not a fork (a fork of a process whose
    torch threads or device already ran can hang) nor multiprocessing's spawn (which runs the caller's
    main script again: a script without a main guard, or one read from stdin, would break). It gets the
    caller's import path, and a session of its own: no Ctrl-C reaches it but through the engine, and its
    process group holds everything it starts.
    """

    def __init__(self, model: dict, run: str):
        rows_read, rows_write = os.pipe()
        results_read, results_write = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        self.process = subprocess.Popen([sys.executable, "-m", __spec__.name, str(rows_read), str(results_write)],
                                        pass_fds=(rows_read, results_write), stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
        os.close(rows_read)
        os.close(results_write)
        self.rows, self.results = Connection(rows_write, readable=False), Connection(results_read, writable=False)
        self.rows.send((model, run))

    def submit(self, job: Job, overwrite: bool) -> None:
        self.rows.send((job, overwrite))

    def receive(self, deadline: float) -> tuple | None:
        """The worker's next message; None when the deadline passed first; ("died", exit status) when it died."""
        if not self.results.poll(max(0.0, deadline - time.monotonic())):
            return None
        try:
            return self.results.recv()
        except (EOFError, OSError):
            try:
                return ("died", self.process.wait(5))
            except subprocess.TimeoutExpired:
                return ("died", None)

    def kill(self) -> None:
        """Stop the worker and every process it started, at once."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (AttributeError, OSError):  # no process groups on this system
            self.process.kill()
        self.process.wait()
        self._close_pipes()

    def close(self) -> None:
        """Let the worker finish (it exits when its pipe closes); killed if it has not within seconds."""
        self._close_pipes()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def _close_pipes(self) -> None:
        self.rows.close()
        self.results.close()


def run_local(jobs: list[Job], model: dict, overwrite: bool, done: Callable[[RowResult], None], *, run: str,
              row_timeout: float | None) -> None:
    """Run `jobs` one after another on a worker process, calling `done(result)` as each row finishes."""
    worker: Worker | None = None
    current: Job | None = None
    try:
        for job in jobs:
            limit = row_limit(job, row_timeout)
            if worker is None:
                worker = Worker(model, run)
            current = job
            worker.submit(job, overwrite)
            deadline = time.monotonic() + limit
            while True:
                message = worker.receive(deadline)
                if message is None or message[0] == "died":
                    worker.kill()
                    worker = None
                    remove_parts(job.out, run)
                    done(timed_out(job, limit) if message is None else died(job, message[1]))
                    break
                if message[0] in ("ready", "loaded"):  # starting the worker and loading the model do not count
                    deadline = time.monotonic() + limit
                elif message[0] == "weights":
                    raise message[1]
                else:
                    done(message[1])
                    break
            current = None
    finally:
        if worker is not None:
            if current is None:
                worker.close()
            else:  # Ctrl-C, or a weights error: stop at once, and leave no temporary file
                worker.kill()
                remove_parts(current.out, run)


def died(job: Job, status: int | None) -> RowResult:
    """The result of a row whose worker process died under it."""
    how = f"killed by signal {-status}" if status is not None and status < 0 else f"exit status {status}"
    return RowResult(job.row, str(job.out), "failed",
                     one_line(f"the worker process died while running it ({how}; out of memory?)", ERROR_CHARS))


if __name__ == "__main__":  # the worker process: python -m pcavs.batches.local ROWS_FD RESULTS_FD
    serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
