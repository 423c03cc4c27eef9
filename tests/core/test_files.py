"""The core's shared pieces: files that appear whole, CSV tables, and batches that shrink on out-of-memory."""
import gc
import os
import weakref

import pytest
import torch

from pcavs.core.devices import ShrinkingBatches
from pcavs.core.errors import InputError, OutOfMemoryError, PcavsError, one_line, reason
from pcavs.core.files import AtomicFile, join_run, new_run, remove_parts, run_id
from pcavs.core.tables import read_table


def test_atomic_file_appears_only_when_committed(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with AtomicFile(target) as part:
        part.write_text("new")
        assert target.read_text() == "old" and part.name.startswith(".out.txt.") and part.suffix == ".part"
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]
    with pytest.raises(ValueError):
        with AtomicFile(target) as part:
            part.write_text("half")
            raise ValueError("stopped half-way")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


def test_atomic_file_errors_name_the_folder(tmp_path):
    with pytest.raises(InputError, match=r"/proc: cannot create files there"):
        AtomicFile("/proc/out.mp4").claim()
    blocked = AtomicFile(tmp_path / "folder")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x").write_text("a folder cannot be replaced by a file")
    with pytest.raises(PcavsError, match="could not be moved into place"):
        with blocked as part:
            part.write_text("video")
    assert sorted(os.listdir(tmp_path)) == ["folder"]


def test_temporary_files_carry_the_run_id_and_remove_parts_keeps_other_runs(tmp_path):
    """Cleaning up after a killed writer removes that run's temporary files of that target, never another run's
    (a concurrent batch writing beside it)."""
    assert AtomicFile(tmp_path / "a.mp4").path.name.startswith(f".a.mp4.{run_id()}-")
    for name in (".a.mp4.1234abcd-00000001.part", ".a.mp4.1234abcd-00000002.part", ".a.mp4.ffff0000-00000001.part",
                 ".b.mp4.1234abcd-00000001.part", "a.mp4"):
        (tmp_path / name).write_text("")
    remove_parts(tmp_path / "a.mp4", "1234abcd")
    assert sorted(os.listdir(tmp_path)) == [".a.mp4.ffff0000-00000001.part", ".b.mp4.1234abcd-00000001.part", "a.mp4"]
    remove_parts(tmp_path / "[a].mp4", "*")  # names are matched literally
    assert len(os.listdir(tmp_path)) == 3


def test_a_worker_joins_its_runs_id_and_a_fork_gets_its_own(tmp_path):
    mine, run = run_id(), new_run()
    assert run != mine and len(run) == 8
    try:
        join_run(run)
        assert run_id() == run and AtomicFile(tmp_path / "x").path.name.startswith(f".x.{run}-")
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:  # the child reports its id and leaves at once
            os.write(writer, run_id().encode())
            os._exit(0)
        os.close(writer)
        os.waitpid(child, 0)
        forked = os.read(reader, 64).decode()
        os.close(reader)
        assert len(forked) == 8 and forked not in (run, mine)
    finally:
        join_run(mine)


def test_table_paths_are_relative_to_the_csv(tmp_path, monkeypatch):
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "t.csv").write_bytes("\ufeffvideo, audio\n clip.mp4 ,../voice.wav\n,\n~/x.mp4,\n".encode())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    table = read_table(folder / "t.csv", "a video column")
    assert table.columns == ["video", "audio"] and [n for n, _ in table.rows] == [2, 4]  # the blank row is skipped
    first = table.rows[0][1]
    assert table.path(first["video"]) == folder / "clip.mp4" and table.path(first["audio"]) == tmp_path / "voice.wav"
    assert table.path(table.rows[1][1]["audio"]) is None
    assert table.path(table.rows[1][1]["video"]) == tmp_path / "home" / "x.mp4"
    listed = read_table([{"video": "clip.mp4", "audio": None}], "a video column")
    assert listed.path("clip.mp4") == tmp_path / "clip.mp4" and listed.rows == [(0, {"video": "clip.mp4", "audio": ""})]


@pytest.mark.parametrize("text, words", [
    ("", "needs a header with a video column, and at least one row"),
    ("video\na.mp4,extra\n", "row 2 has more cells than the header has columns"),
    (b"video\n\xff\xfe\n", "not a readable CSV file"),
])
def test_table_errors_name_the_file(tmp_path, text, words):
    path = tmp_path / "t.csv"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    with pytest.raises(InputError, match=words) as error:
        read_table(path, "a video column")
    assert str(path) in str(error.value)
    with pytest.raises(InputError, match="cannot read the table"):
        read_table(tmp_path / "absent.csv", "a video column")


def test_shrinking_batches_halve_keep_the_size_and_free_the_failed_attempt():
    batches = ShrinkingBatches(torch.device("cpu"), "the test network", "frame")
    seen, alive = [], []

    def work(start, stop):
        activations = torch.zeros(stop - start)
        if alive:  # the failed attempt's tensor was freed before this retry began
            gc.collect()
            assert alive[-1]() is None
        if stop - start > 3:
            alive.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory")
        seen.append((start, stop))
        return stop - start

    assert batches(work, 10) == [2, 2, 2, 2, 2] and batches.limit == 2
    assert seen[:2] == [(0, 2), (2, 4)]
    seen.clear()
    assert batches(work, 5, size=8) == [2, 2, 1] and seen == [(0, 2), (2, 4), (4, 5)]  # the smaller size is kept
    assert batches(work, 0) == []


def test_shrinking_batches_give_up_at_one_item():
    batches = ShrinkingBatches(torch.device("cpu"), "the test network", "face")

    def never(start, stop):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(OutOfMemoryError, match=r"out of memory even for one face \(the test network\)") as error:
        batches(never, 4)
    assert "\n" not in str(error.value) and batches.limit == 1


def test_one_line_wording():
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 50, limit=10) == "xxxxxxx..."
    assert reason(FileNotFoundError(2, "No such file or directory")) == "No such file or directory"
    assert reason(ValueError()) == "ValueError"
