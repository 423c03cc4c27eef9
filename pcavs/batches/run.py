"""`pcavs.batch`: a jobs table checked whole, then run by an engine (this process, or Ray) into a results table."""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from ..core.errors import InputError
from ..core.options import job_options
from ..generation.pipeline import Pipeline
from .cluster import import_ray, run_ray
from .jobs import BatchReport, Job, Results, RowResult, load_jobs, results_path, run_job


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
        from .cluster import import_ray

        import_ray()  # before anything is written: without Ray, say how to install it
    model = dict(checkpoints=checkpoints, device=device, dtype=dtype, compile=compile)
    table = Results(results_path(jobs, results), len(loaded), progress)
    try:
        if ray is None:
            run_local(loaded, model, overwrite, table.add)
        else:
            from .cluster import run_ray

            run_ray(loaded, model, overwrite, table.add, address=ray, workers=workers)
    finally:
        report = table.close()
    return report


def run_local(jobs: list[Job], model: dict, overwrite: bool, done: Callable[[RowResult], None]) -> None:
    """The local engine: the rows one after another in this process, the networks loaded once (on first need)."""
    loaded: list = []

    def pipeline():
        if not loaded:
            loaded.append(Pipeline.from_pretrained(**model))
        return loaded[0]

    for job in jobs:
        done(run_job(pipeline, job, overwrite))
