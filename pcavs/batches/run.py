"""`pcavs.batch`: a jobs table checked whole, then run by an engine (a worker process here, or Ray) into a results table."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from ..core.errors import InputError
from ..core.files import new_run
from ..core.options import job_options
from .jobs import BatchReport, Results, check_timeout, load_jobs, results_path


def batch(
    jobs: str | os.PathLike | Sequence[Mapping[str, Any]],
    ray: str | None = None,
    *,
    workers: int | None = None,
    results: str | os.PathLike | None = None,
    overwrite: bool = False,
    row_timeout: float | None = None,
    progress: bool = True,
    checkpoints: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str | None = None,
    compile: bool = False,
    **options: Any,
) -> BatchReport:
    """Run every row of a jobs table: a CSV file (columns face,audio,pose,out and any `generate` option) or a list of dicts.

    Relative paths are relative to the jobs file (to the working folder for a list). Every row
    is validated before any work starts. ray=None runs the rows one after another in one worker
    process on this machine, with one model load; ray="auto" runs them on the Ray cluster named by
    $RAY_ADDRESS (or a local one it starts), ray="host:port" or "ray://host:10001" on that cluster,
    with `workers` workers (one GPU each where the cluster has GPUs). Rows whose `out` already is a
    complete video are skipped, and rows whose `out` holds anything else fail and keep it, unless
    overwrite=True. A row still running after `row_timeout` seconds (default: 10 minutes plus 10 s
    per frame of its audio, 50 s with enhance=) is stopped and fails. A row that fails is recorded
    with its reason and the others go on; a WeightsError stops the batch. The results table
    (row,out,status,error,frames,seconds) goes to `results`, by default <jobs>.results.csv beside a
    jobs file. `options` are the defaults for every row (mode, noise, seed, pose_loop, ...); the
    row's own cells win.
    """
    loaded = load_jobs(jobs, job_options(**options))
    check_timeout(row_timeout)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers: {workers!r} must be a positive whole number")
    if workers is not None and ray is None:
        raise InputError("workers: the number of workers is for the Ray engine; add --ray (ray='auto')")
    if ray is not None:
        from .cluster import import_ray

        import_ray()  # before anything is written: without Ray, say how to install it
    model = dict(checkpoints=checkpoints, device=device, dtype=dtype, compile=compile)
    table = Results(results_path(jobs, results), len(loaded), progress)
    run = new_run()  # the id of this batch's temporary files, in every worker
    try:
        if ray is None:
            from .local import run_local

            run_local(loaded, model, overwrite, table.add, run=run, row_timeout=row_timeout)
        else:
            from .cluster import run_ray

            run_ray(loaded, model, overwrite, table.add, run=run, row_timeout=row_timeout, address=ray, workers=workers)
    finally:
        report = table.close()
    return report
