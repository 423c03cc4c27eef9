"""Files to a finished mp4 through the real CLI and API: streams, sync, modes, atomic writes, batch, errors."""
from __future__ import annotations

import csv
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
import soundfile as sf

import pcavs
from pcavs.core.assets import DEMO_FACE, DEMO_POSE
from pcavs.core.errors import InputError
from pcavs.media.probe import probe
from pcavs.media.images import read_image
from pcavs.media.audio import read_audio
from pcavs.media.video import iter_frames

from support.kits import INPUTS
from support.media import tone
from support.av import ffmpeg


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcavs", *args], capture_output=True, text=True, cwd=cwd)


def count_frames(path) -> int:
    return sum(1 for _ in iter_frames(path))


@pytest.fixture(scope="module")
def short_mp3(tmp_path_factory):
    """0.5 s of the kit's speech as an mp3: 13 frames."""
    folder = tmp_path_factory.mktemp("audio")
    data, rate = sf.read(INPUTS / "speech_short.wav", dtype="float32")
    wav = folder / "short.wav"
    sf.write(wav, data[: rate // 2], rate)
    mp3 = folder / "short voice.mp3"
    ffmpeg("-i", str(wav), "-c:a", "libmp3lame", "-b:a", "96k", str(mp3))
    return mp3


def test_cli_full_mode_from_photo_mp3_and_phone_video(tmp_path, short_mp3):
    out = tmp_path / "vidéo finale.mp4"  # spaces and non-ASCII in paths
    done = cli("generate", "--face", str(DEMO_FACE), "--audio", str(short_mp3), "--pose", str(DEMO_POSE), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    info = probe(out)
    assert (info.video_codec, info.pix_fmt, info.audio_codec, info.fps) == ("h264", "yuv420p", "aac", 25.0)
    photo = read_image(DEMO_FACE)
    assert (info.height, info.width) == photo.shape[:2]
    samples, rate = read_audio(short_mp3, mono=True)
    frames = list(iter_frames(out))
    assert len(frames) == math.ceil(len(samples) / rate * 25)
    out_audio, out_rate = read_audio(out)
    assert abs(len(out_audio) / out_rate - len(frames) / 25) <= 1 / 25
    # outside the pasted face the frame is the photo (up to H.264 noise)
    corner = (slice(300, 512), slice(0, 120))
    assert np.abs(frames[5][corner].astype(int) - photo[corner].astype(int)).mean() < 4
    assert not list(tmp_path.glob(".*part*"))


def test_api_grid_mode_fixed_pose_and_frames(tmp_path, short_mp3, synth_weights):
    pipe = pcavs.Pipeline.from_pretrained(synth_weights, device="cpu")
    result = pipe(face=DEMO_FACE, audio=short_mp3, pose=DEMO_FACE, out=tmp_path / "grid.mp4", mode="grid",
                  return_frames=True, progress=False, noise="random", seed=3)
    assert result.frames.shape == (13, 248, 672, 3) and result.faces.shape == (13, 224, 224, 3)
    assert count_frames(result.video) == 13
    assert np.array_equal(result.frames[0, 24:, 224:448], result.faces[0])


def test_interrupt_leaves_no_file(tmp_path, monkeypatch, pipeline, short_mp3):
    from pcavs.media import video

    out = tmp_path / "result.mp4"
    out.write_bytes(b"previous result")
    calls = []

    def write(self, frame):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, frame)

    original = video.VideoWriter.write
    monkeypatch.setattr(video.VideoWriter, "write", write)
    with pytest.raises(KeyboardInterrupt):
        pipeline(face=str(INPUTS / "identity" / "000000.png"), audio=short_mp3, out=out, aligned=True, mode="crop",
                 progress=False, batch_size=4)
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.mp4"]


def test_batch_finishes_good_rows(tmp_path, short_mp3):
    sf.write(tmp_path / "tiny.wav", tone(0.2, 16000), 16000)
    jobs = tmp_path / "jobs.csv"
    with open(jobs, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["face", "audio", "pose", "out"])
        writer.writerow(["missing.jpg", "tiny.wav", "", "bad.mp4"])
        writer.writerow([str(INPUTS / "identity" / "000000.png"), "tiny.wav", "", "good.mp4"])
    done = cli("batch", str(jobs), "--aligned", "--mode", "crop", "--quiet")
    assert done.returncode == 2
    assert "row 2" in done.stderr and "missing.jpg" in done.stderr
    assert count_frames(tmp_path / "good.mp4") == 5 and not (tmp_path / "bad.mp4").exists()


def test_cli_errors_are_one_line_with_exit_2(tmp_path, short_mp3):
    cases = [
        ("generate", "--face", str(tmp_path / "nobody.jpg"), "--audio", str(short_mp3), "--out", str(tmp_path / "o.mp4")),
        ("generate", "--face", str(DEMO_FACE), "--audio", str(short_mp3), "--out", str(tmp_path / "no" / "o.mp4")),
        ("generate", "--face", str(INPUTS / "speech.wav"), "--audio", str(short_mp3), "--out", str(tmp_path / "o.mp4")),
        ("generate", "--face", str(DEMO_FACE), "--audio", str(DEMO_POSE), "--out", str(tmp_path / "o.mp4")),
        ("generate", "--face", str(DEMO_FACE), "--audio", str(short_mp3), "--out", str(tmp_path / "o.mp4"), "--checkpoints", str(tmp_path)),
    ]
    for args in cases:
        done = cli(*args, "--quiet")
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pcavs: "), done.stderr
    assert not (tmp_path / "o.mp4").exists()
    assert "Traceback" in cli("--debug", *cases[0]).stderr


def test_warnings_are_one_line(tmp_path):
    """Two people in the photo: the video is made from the larger face, with one warning line."""
    from support.faces import place_face, placement

    photo = tmp_path / "two people.png"
    canvas = place_face(place_face((420, 680), placement(1.4, 4.0, (30, 40))), placement(0.9, -6.0, (420, 110)))
    cv2.imwrite(str(photo), canvas[:, :, ::-1])
    speech = tmp_path / "hi.wav"
    sf.write(speech, tone(0.04, 16000), 16000)
    done = cli("generate", "--face", str(photo), "--audio", str(speech), "--out", str(tmp_path / "o.mp4"), "--mode", "crop",
               "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [f"pcavs: warning: {photo}: 2 faces found; using the largest (choose another "
                                                "with face_index= or --face-index)"]


def test_help_shows_examples():
    done = cli("generate", "--help")
    assert done.returncode == 0 and "pcavs generate --face me.jpg" in done.stdout


def test_check_inputs_before_model_work(monkeypatch, tmp_path):
    from pcavs.generation import pipeline

    monkeypatch.setattr(pipeline.Pipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
    pipeline._CACHE.clear()
    with pytest.raises(InputError, match="mode: 'wide'"):
        pcavs.generate(face=DEMO_FACE, audio=DEMO_POSE, mode="wide")
    with pytest.raises(InputError, match="pose_loop"):
        pcavs.generate(face=DEMO_FACE, audio=DEMO_POSE, pose_loop="bounce")


@pytest.mark.slow  # the whole demo (62 frames); CI runs it, and .ci/run runs it again from the wheel
def test_demo_command(tmp_path):
    done = cli("demo", "--out", str(tmp_path / "demo.mp4"), "--mode", "crop", "--quiet")
    assert done.returncode == 0, done.stderr
    info = probe(tmp_path / "demo.mp4")
    assert info.has_audio and (info.width, info.height) == (224, 224)


def test_video_driven_mouth_takes_the_videos_sound(tmp_path, pipeline):
    from support.media import write_video

    crops = [read_image(p) for p in sorted((INPUTS / "pose").glob("*.png"))[:6]]
    silent = write_video(tmp_path / "silent.mp4", crops, 25)
    speech = tmp_path / "speech.wav"
    data, rate = sf.read(INPUTS / "speech_short.wav", dtype="float32")
    sf.write(speech, data[: 5 * 640], rate)
    talking = tmp_path / "talking.mp4"
    ffmpeg("-i", str(silent), "-i", str(speech), "-c:v", "copy", "-c:a", "aac", str(talking))
    face = str(INPUTS / "identity" / "000000.png")
    by_video = pipeline(face=face, mouth=talking, out=None, progress=False)
    by_audio = pipeline(face=face, audio=talking, out=None, progress=False)
    assert by_video.faces.shape == by_audio.faces.shape == (5, 224, 224, 3)
    assert np.abs(by_video.faces.astype(int) - by_audio.faces.astype(int)).mean() > 1
