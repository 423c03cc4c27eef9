"""`pcavs batch --ray` on a two-CPU Ray cluster that the test starts on the loopback address.

The Ray engine must give the local engine's videos frame for frame, record failed rows, redo
the row of a worker killed under it (with no partial file) and fail it once its retries are spent,
stop a hung row at its time limit, stop the batch on a weights error, and skip complete videos.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time

import numpy as np
import pytest

import pcavs
from pcavs.app import cli
from pcavs.batches import cluster as batch_ray
from pcavs.batches.jobs import Results

from pcavs.core.errors import WeightsError

from support.jobs import (BAD, FACE, GOOD, check_hung_rows, frames, hung_rows, leftovers, read_results, six_rows,
                          stalling_ffmpeg, voice, write_jobs)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A private Ray instance: 2 CPUs, no dashboard, on the loopback address only, its files in a short folder.

    Ray turns 127.0.0.1 into the machine's reachable address unless it is told this is no cluster
    (its switch for laptops): then the node, and every port it opens, is on 127.0.0.1. Its workers
    use stalling_ffmpeg(), the real ffmpeg for every file but a STALLED one.
    """
    from ray._private import ray_constants

    if ray.is_initialized():
        ray.shutdown()
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read by the processes Ray starts
        patch.setenv("IMAGEIO_FFMPEG_EXE", str(stalling_ffmpeg(tmp_path_factory.mktemp("ffmpeg"))))
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False, raising=False)  # and by this one, read at import
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=folder,
                 log_to_driver=False, configure_logging=False)
        try:
            assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
            yield ray
        finally:
            ray.shutdown()
            shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # about 30-50 frames: a minute or two on 2 cores
def test_ray_gives_the_local_videos_and_records_failures(tmp_path, cluster, synth_weights, capsys, monkeypatch):
    local, remote = tmp_path / "local", tmp_path / "ray"
    local.mkdir(), remote.mkdir()
    options = dict(aligned=True, mode="crop", checkpoints=synth_weights, progress=False)
    with monkeypatch.context() as patch:
        # one torch thread in the local engine's worker process, as in each of the two Ray workers on two
        # CPUs: float sums split over other thread counts round apart
        patch.setenv("OMP_NUM_THREADS", "1")
        expected = pcavs.batch(six_rows(local), **options)
    assert [row.status for row in expected.rows] == ["done", "done", "failed", "done", "failed", "done"]

    args = ["batch", str(six_rows(remote)), "--ray", "--workers", "2", "--aligned", "--mode", "crop",
            "--checkpoints", str(synth_weights), "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert all(f"row {row}: " in err for row in BAD)
    table = read_results(remote / "jobs.results.csv")
    for row, name in GOOD.items():
        assert table[row]["status"] == "done" and table[row]["out"] == str(remote / "out" / name)
        made, reference = frames(remote / "out" / name), frames(local / "out" / name)
        assert made.shape == reference.shape and np.array_equal(made, reference), name
        assert int(table[row]["frames"]) == len(made)
    for row, name in BAD.items():
        assert table[row]["status"] == "failed" and name in table[row]["error"] and "\n" not in table[row]["error"]
    assert not leftovers(remote)

    # a second run skips the four videos and leaves them untouched; the bad rows fail again
    stamps = {name: (remote / "out" / name).stat().st_mtime_ns for name in GOOD.values()}
    assert cli.main(args) == 2
    table = read_results(remote / "jobs.results.csv")
    assert {row: table[row]["status"] for row in table} == {**{row: "skipped" for row in GOOD}, **{row: "failed" for row in BAD}}
    assert all((remote / "out" / name).stat().st_mtime_ns == stamp for name, stamp in stamps.items())


def test_a_killed_worker_row_is_redone_elsewhere(tmp_path, cluster, synth_weights, monkeypatch):
    long, short = voice(tmp_path, 0.4), voice(tmp_path, 0.2)
    jobs = write_jobs(tmp_path / "jobs.csv", [dict(face=FACE, audio=long, out="long.mp4"),
                                              dict(face=FACE, audio=short, out="short.mp4")])
    killed, spawned = [], []
    submit, spawn = batch_ray.Dispatcher._submit, batch_ray.Dispatcher._spawn

    def kill_when_writing(worker, out):
        """Kill the worker once it has begun writing `out` (its hidden .part file exists)."""
        deadline = time.monotonic() + 300
        while not list(out.parent.glob(f".{out.name}.*.part")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        killed.append((out.exists(), bool(list(out.parent.glob(f".{out.name}.*.part")))))
        ray.kill(worker)

    def watched_submit(self, worker, job):
        if job.out.name == "long.mp4" and not killed:
            threading.Thread(target=kill_when_writing, args=(worker, job.out), daemon=True).start()
        return submit(self, worker, job)

    def counted_spawn(self):
        spawned.append(1)
        return spawn(self)

    monkeypatch.setattr(batch_ray.Dispatcher, "_submit", watched_submit)
    monkeypatch.setattr(batch_ray.Dispatcher, "_spawn", counted_spawn)
    report = pcavs.batch(jobs, ray="auto", workers=2, aligned=True, mode="crop", checkpoints=synth_weights, progress=False)
    assert killed == [(False, True)]  # killed mid-row: writing, nothing at the output name yet
    assert len(spawned) == 3  # two workers, and one in place of the killed one
    assert [(row.status, row.frames) for row in report.rows] == [("done", 10), ("done", 5)]
    assert len(frames(tmp_path / "long.mp4")) == 10 and not leftovers(tmp_path)


def test_a_row_whose_workers_keep_dying_fails_after_its_retries(tmp_path, cluster, synth_weights, monkeypatch):
    """Each worker that takes the row dies under it: after MAX_RETRIES runs more, the row fails and the batch goes on."""
    jobs = write_jobs(tmp_path / "jobs.csv", [dict(face=FACE, audio=voice(tmp_path, 0.08), out="doomed.mp4"),
                                              dict(face="missing.png", audio="voice80.wav", out="other.mp4")])
    submit, spawn, spawned = batch_ray.Dispatcher._submit, batch_ray.Dispatcher._spawn, []

    def killed_at_once(self, worker, job):
        ref = submit(self, worker, job)
        if job.out.name == "doomed.mp4":
            ray.kill(worker)
        return ref

    def counted_spawn(self):
        spawned.append(1)
        return spawn(self)

    monkeypatch.setattr(batch_ray.Dispatcher, "_submit", killed_at_once)
    monkeypatch.setattr(batch_ray.Dispatcher, "_spawn", counted_spawn)
    report = pcavs.batch(jobs, ray="auto", workers=1, aligned=True, mode="crop", checkpoints=synth_weights, progress=False)
    doomed, other = report.rows
    assert doomed.status == "failed" and f"its worker died {batch_ray.MAX_RETRIES + 1} times" in doomed.error
    assert other.status == "failed" and "missing.png: file not found" in other.error  # the batch went on
    assert len(spawned) == 1 + batch_ray.MAX_RETRIES + 1  # the first worker, and one for each that died
    assert not (tmp_path / "doomed.mp4").exists() and not leftovers(tmp_path)


def test_a_hung_row_is_stopped_and_the_batch_goes_on(tmp_path, cluster, synth_weights, capsys):
    jobs = hung_rows(tmp_path)
    args = ["batch", str(jobs), "--ray", "--workers", "1", "--aligned", "--mode", "crop", "--checkpoints",
            str(synth_weights), "--quiet", "--row-timeout", "10"]
    assert cli.main(args) == 2
    assert "row 2: stopped after 10 s (the row timeout)" in capsys.readouterr().err
    check_hung_rows(tmp_path, read_results(tmp_path / "jobs.results.csv"), 10)
    assert not leftovers(tmp_path)


def test_weights_errors_stop_the_batch(tmp_path, cluster, synth_weights):
    """As on the local engine: a row's WeightsError stops the batch (it is no "internal error" of one row)."""
    broken = tmp_path / "GFPGANv1.4.pth"
    broken.write_text("<html>not found</html>")
    name = voice(tmp_path, 0.08)
    jobs = write_jobs(tmp_path / "jobs.csv", [dict(face=FACE, audio=name, out="sharp.mp4", enhance="gfpgan",
                                                   enhance_checkpoint=broken.name),
                                              dict(face=FACE, audio=name, out="plain.mp4")])
    with pytest.raises(WeightsError, match=str(broken)):
        pcavs.batch(jobs, ray="auto", workers=1, aligned=True, mode="crop", checkpoints=synth_weights, progress=False)
    assert not list(tmp_path.glob("*.mp4")) and not leftovers(tmp_path)
    with pytest.raises(WeightsError, match=str(tmp_path / "nowhere")):  # at a worker's start: the batch stops too
        pcavs.batch(jobs, ray="auto", workers=1, checkpoints=tmp_path / "nowhere", progress=False)


def test_ctrl_c_stops_the_workers_and_keeps_finished_videos(tmp_path, cluster, synth_weights, monkeypatch):
    short, long = voice(tmp_path, 0.2), voice(tmp_path, 0.4)
    jobs = write_jobs(tmp_path / "jobs.csv", [dict(face=FACE, audio=short, out="first.mp4"),
                                              dict(face=FACE, audio=long, out="second.mp4")])
    add = Results.add

    def interrupt_after_first(self, result):
        add(self, result)
        raise KeyboardInterrupt

    monkeypatch.setattr(Results, "add", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        pcavs.batch(jobs, ray="auto", workers=2, aligned=True, mode="crop", checkpoints=synth_weights, progress=False)
    assert {row: r["status"] for row, r in read_results(tmp_path / "jobs.results.csv").items()} == {2: "done"}
    assert len(frames(tmp_path / "first.mp4")) == 5 and not (tmp_path / "second.mp4").exists()
    time.sleep(1)
    assert not leftovers(tmp_path)
    deadline = time.monotonic() + 30  # the workers are gone: their CPUs are free again
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2


def test_workers_share_out_the_cluster():
    """One GPU each on a GPU cluster; else the CPUs shared out so that every worker fits on a node."""
    assert batch_ray.plan({"CPU": 16, "GPU": 2}, [8, 8], None) == (2, {"num_gpus": 1, "num_cpus": 1}, None)
    assert batch_ray.plan({"CPU": 2}, [2], 2) == (2, {"num_cpus": 1}, 1)
    assert batch_ray.plan({"CPU": 2}, [2], None) == (1, {"num_cpus": 2}, 2)
    assert batch_ray.plan({"CPU": 16}, [8, 8], None) == (4, {"num_cpus": 4}, 4)
    assert batch_ray.plan({"CPU": 16}, [8, 8], 3) == (3, {"num_cpus": 4}, 4)  # 5 each would leave one unplaced
