"""`pcavs batch` with the local engine: row validation, output naming, the results table, skipping, faults."""
from __future__ import annotations

import sys

import pytest

import pcavs
from pcavs.app import cli
from pcavs.batches.jobs import load_jobs
from pcavs.core.errors import InputError

from support.jobs import BAD, FACE, GOOD, frames, leftovers, read_results, six_rows, voice, write_jobs


def test_rows_are_checked_before_any_work(tmp_path):
    name = voice(tmp_path, 0.2)
    cases = {
        "unknown column 'mdoe'; did you mean 'mode'?": [dict(face=FACE, audio=name, mdoe="crop")],
        "row 3: mode: 'ful' is not one of full, crop, grid": [dict(face=FACE, audio=name, out="a.mp4"),
                                                             dict(face=FACE, audio=name, out="b.mp4", mode="ful")],
        "rows 2 and 3 both write": [dict(face=FACE, audio=name, out="same.mp4"), dict(face=FACE, audio=name, out="same.mp4")],
        "column 'device' cannot vary by row": [dict(face=FACE, audio=name, device="cuda")],
        "row 2: seed: 'x' must be a whole number": [dict(face=FACE, audio=name, seed="x")],
        "row 2: out: a.avi: the output must be an .mp4": [dict(face=FACE, audio=name, out="a.avi")],
        "row 2: face: the cell is empty": [dict(face="", audio=name)],
        "has no 'face' column": [dict(photo=FACE, audio=name)],
    }
    for expected, rows in cases.items():
        jobs = write_jobs(tmp_path / "jobs.csv", rows)
        with pytest.raises(InputError) as caught:
            pcavs.batch(jobs, progress=False)
        message = str(caught.value)
        assert message.startswith(str(jobs)) and expected in message and "\n" not in message
        assert not (tmp_path / "jobs.results.csv").exists()
    assert not list(tmp_path.glob("*.mp4"))


def test_paths_are_relative_to_the_jobs_file_and_outputs_are_named(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    name = voice(folder, 0.2)
    jobs = write_jobs(folder / "jobs.csv", [
        dict(face=FACE, audio=name, pose="", out="videos/x.mp4", mode="grid"),
        dict(face=FACE, audio=name, pose="", out=""),
        dict(face=FACE, audio=name, pose="clips/nod.mp4", out="", noise="random", seed="3", aligned="yes"),
    ])
    first, second, third = load_jobs(jobs)
    assert (first.row, first.audio, first.out, first.options.mode) == (2, folder / name, folder / "videos" / "x.mp4", "grid")
    assert second.out == folder / "000000_voice200.mp4" and second.pose is None
    assert third.out == folder / "000000_voice200_nod.mp4" and third.pose == folder / "clips" / "nod.mp4"
    assert (third.options.noise, third.options.seed, third.options.aligned) == ("random", 3, True)
    assert not (third.options.progress or third.options.return_frames or third.options.return_faces)


@pytest.mark.slow  # about 30-50 frames: a minute or two on 2 cores
def test_local_engine_results_table_skip_and_redo(tmp_path, synth_weights, capsys):
    jobs = six_rows(tmp_path)
    args = ["batch", str(jobs), "--aligned", "--mode", "crop", "--checkpoints", str(synth_weights), "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert all(f"row {row}" in err and name in err for row, name in BAD.items())
    table = read_results(tmp_path / "jobs.results.csv")
    assert sorted(table) == [2, 3, 4, 5, 6, 7]
    for row, name in GOOD.items():
        assert (table[row]["status"], table[row]["out"], table[row]["error"]) == ("done", str(tmp_path / "out" / name), "")
        assert int(table[row]["frames"]) == len(frames(tmp_path / "out" / name)) in (5, 8)
        assert float(table[row]["seconds"]) > 0
    for row, name in BAD.items():
        assert table[row]["status"] == "failed" and name in table[row]["error"] and table[row]["frames"] == "0"
        assert "\n" not in table[row]["error"]
    assert not (tmp_path / "out" / "c.mp4").exists() and not leftovers(tmp_path)

    # a second run skips the complete videos; a cut-short copy is not complete and is made again
    made = {name: (tmp_path / "out" / name).stat().st_mtime_ns for name in GOOD.values()}
    data = (tmp_path / "out" / "a.mp4").read_bytes()
    (tmp_path / "out" / "a.mp4").write_bytes(data[: len(data) // 2])
    assert cli.main(args) == 2
    table = read_results(tmp_path / "jobs.results.csv")
    assert {row: table[row]["status"] for row in GOOD} == {2: "done", 3: "skipped", 5: "skipped", 7: "skipped"}
    assert int(table[2]["frames"]) == len(frames(tmp_path / "out" / "a.mp4")) == 5
    assert all((tmp_path / "out" / name).stat().st_mtime_ns == made[name] for name in ("b.mp4", "d.mp4", "f.mp4"))

    # overwrite=True redoes a complete video; results= puts the table elsewhere
    write_jobs(tmp_path / "one.csv", [dict(face=FACE, audio="voice200.wav", out="out/d.mp4", noise="random", seed="7")])
    report = pcavs.batch(tmp_path / "one.csv", results=tmp_path / "redo.csv", overwrite=True, aligned=True, mode="crop",
                         checkpoints=synth_weights, progress=False)
    assert [row.status for row in report.rows] == ["done"] and report.results == tmp_path / "redo.csv"
    assert read_results(tmp_path / "redo.csv")[2]["status"] == "done"
    assert (tmp_path / "out" / "d.mp4").stat().st_mtime_ns > made["d.mp4"]


def test_ctrl_c_keeps_finished_videos(tmp_path, synth_weights, monkeypatch, capsys):
    from pcavs.media import video

    name = voice(tmp_path, 0.2)
    jobs = write_jobs(tmp_path / "jobs.csv", [dict(face=FACE, audio=name, out="one.mp4"),
                                              dict(face=FACE, audio=name, out="two.mp4")])
    original, calls = video.VideoWriter.write, []

    def write(self, frame):
        calls.append(self.out.name)
        if calls.count("two.mp4") == 2:
            raise KeyboardInterrupt
        return original(self, frame)

    monkeypatch.setattr(video.VideoWriter, "write", write)
    code = cli.main(["batch", str(jobs), "--aligned", "--mode", "crop", "--checkpoints", str(synth_weights), "--quiet"])
    assert code == 130 and "finished are in place" in capsys.readouterr().err
    assert len(frames(tmp_path / "one.mp4")) == 5 and not (tmp_path / "two.mp4").exists() and not leftovers(tmp_path)
    assert {row: r["status"] for row, r in read_results(tmp_path / "jobs.results.csv").items()} == {2: "done"}


def test_ray_engine_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    jobs = write_jobs(tmp_path / "jobs.csv", [dict(face=FACE, audio=voice(tmp_path, 0.2))])
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert cli.main(["batch", str(jobs), "--ray", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "pcavs[ray]"' in err
    assert cli.main(["batch", str(jobs), "--workers", "2", "--quiet"]) == 2
    assert "--ray" in capsys.readouterr().err
