"""pcavs's ffprobe on PyAV answers what Gradio and pydub ask, as ffprobe would, through PATH like the real one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("av", reason="the ffprobe stand-in needs PyAV: pip install av")
from pcavs.core.assets import DEMO_AUDIO, DEMO_POSE  # noqa: E402
from pcavs.media.ffprobe import tools_folder  # noqa: E402
from pcavs.media.segments import SegmentWriter  # noqa: E402


@pytest.fixture(scope="module")
def on_path(tmp_path_factory):
    """`ffprobe` and `ffmpeg` found the way Gradio finds them: by name, on PATH."""
    folder = tools_folder(tmp_path_factory.mktemp("bin"))
    path = str(folder) + os.pathsep + os.environ["PATH"]
    assert shutil.which("ffprobe", path=path) == str(folder / "ffprobe")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ffprobe", *args], capture_output=True, text=True, env={**os.environ, "PATH": path})

    return run


@pytest.fixture(scope="module")
def segment(tmp_path_factory):
    """The second 1 s segment of a stream: MPEG-TS, whose streams store no durations, starting at 1 s."""
    folder = tmp_path_factory.mktemp("segments")
    with SegmentWriter(folder) as writer:
        made = []
        for index in range(50):
            made += writer.write(np.full((64, 96, 3), index * 5, np.uint8), np.zeros(640, np.float32))
        made += writer.finish(np.zeros(0, np.float32))
    return made[1]


def test_what_gradio_asks_of_a_streamed_segment(on_path, segment):
    done = on_path("-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(segment))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    video = next(s for s in report["streams"] if s["codec_type"] == "video")
    audio = next(s for s in report["streams"] if s["codec_type"] == "audio")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 96, 64)
    assert float(video["duration"]) == pytest.approx(1.0, abs=1e-6)
    assert float(video["start_time"]) == pytest.approx(1.0, abs=1e-6)  # measured from the packets
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "16000", 1)
    assert float(report["format"]["duration"]) > 0


def test_playability_and_length_questions(on_path):
    done = on_path("-show_format", "-show_streams", "-select_streams", "v", "-print_format", "json", "-i", str(DEMO_POSE))
    (video,) = json.loads(done.stdout)["streams"]
    assert video["codec_name"] == "h264" and video["pix_fmt"] == "yuv420p"
    length = on_path("-i", str(DEMO_AUDIO), "-show_entries", "format=duration", "-v", "quiet", "-of", "csv=p=0")
    assert float(length.stdout) == pytest.approx(2.4655, abs=1e-3)
    logged = on_path("-of", "json", "-v", "info", "-show_format", "-show_streams", str(DEMO_AUDIO))  # pydub's question
    assert "Stream #0:0: Audio: pcm_s16le, 16000 Hz" in logged.stderr


def test_an_unreadable_file_fails_as_ffprobe_does(on_path, tmp_path):
    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"not a video" * 10)
    done = on_path("-v", "error", "-print_format", "json", "-show_streams", str(junk))
    assert done.returncode == 1 and str(junk) in done.stderr and done.stdout == ""
