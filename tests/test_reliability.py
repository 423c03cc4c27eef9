"""Bad input gets one clear line; nothing is half-written; properties of the audio front-end and alignment."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcavs import audio
from pcavs.align import ANCHOR_TARGETS, similarity_transform
from pcavs.errors import InputError, PcavsError

from conftest import INPUTS
from media import counter_frame, place_face, similarity, tone, write_video

CROP = str(INPUTS / "identity" / "000000.png")


def run(pipeline, audio_path, **options):
    return pipeline(face=CROP, audio=audio_path, out=None, aligned=True, progress=False, **options)


def test_silence_nan_and_clipped_audio_work(tmp_path, pipeline):
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(3 * 640, np.float32), 16000)
    damaged = tmp_path / "damaged.wav"
    signal = tone(3 * 640 / 16000, 16000) * 8  # clipped far beyond full scale
    signal[100:200] = np.nan
    sf.write(damaged, signal, 16000, subtype="FLOAT")
    for path in (silent, damaged):
        faces = run(pipeline, path).faces
        assert faces.shape == (3, 224, 224, 3)
    assert audio.mel_spectrogram(audio.normalize_rms(audio.load_audio(silent))).max() == 0.0


def test_audio_errors(tmp_path):
    short = tmp_path / "click.wav"
    sf.write(short, tone(0.02, 16000), 16000)
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all " * 20)
    for path, message in ((short, "too short"), (empty, "empty.m4a"), (text, "notes.mp3")):
        with pytest.raises(InputError, match=message) as exc:
            audio.load_audio(path)
        assert "\n" not in str(exc.value)


def test_pose_sources(tmp_path, pipeline):
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    voice = tmp_path / "voice.wav"
    sf.write(voice, tone(3 * 640 / 16000, 16000), 16000)
    with pytest.raises(InputError, match="broken.mp4"):
        pipeline(face=CROP, audio=voice, pose=garbage, out=None, progress=False)
    one = write_video(tmp_path / "one frame.mp4", [place_face((300, 300), similarity(1.1, 3, (30, 40)))], 25)
    result = pipeline(face=CROP, audio=voice, pose=one, out=None, aligned=False, progress=False)
    assert result.faces.shape == (3, 224, 224, 3)
    faceless = write_video(tmp_path / "faceless.mp4", [counter_frame(i, 160) for i in range(5)], 25)
    with pytest.raises(InputError, match="no face found in any frame"):
        pipeline(face=CROP, audio=voice, pose=faceless, out=None, progress=False)


def test_output_errors_leave_nothing(tmp_path, pipeline, monkeypatch):
    from pcavs import video

    voice = tmp_path / "voice.wav"
    sf.write(voice, tone(6 * 640 / 16000, 16000), 16000)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="does not exist"):
        pipeline(face=CROP, audio=voice, out=blocker / "out.mp4", aligned=True, progress=False)
    original = video.VideoWriter.__enter__

    def dying_ffmpeg(self):  # as if the disk filled up: ffmpeg dies mid-write
        writer = original(self)
        writer.proc.kill()
        writer.proc.wait()
        return writer

    monkeypatch.setattr(video.VideoWriter, "__enter__", dying_ffmpeg)
    with pytest.raises(PcavsError, match="out.mp4: writing the video failed"):
        pipeline(face=CROP, audio=voice, out=tmp_path / "out.mp4", aligned=True, mode="crop", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "voice.wav"]


def test_gpu_out_of_memory_splits_the_batch(tmp_path, pipeline, monkeypatch):
    voice = tmp_path / "voice.wav"
    sf.write(voice, tone(4 * 640 / 16000, 16000), 16000)
    expected = run(pipeline, voice, batch_size=4).faces
    generator = pipeline.networks.G
    original = type(generator).forward

    def small_memory(self, spatial, style, noise=None):
        if len(style) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, spatial, style, noise)

    monkeypatch.setattr(type(generator), "forward", small_memory)
    split = run(pipeline, voice, batch_size=4).faces  # same frames, up to float rounding of other batch sizes
    assert split.shape == expected.shape and np.abs(split.astype(int) - expected.astype(int)).max() <= 2
    monkeypatch.setattr(type(generator), "forward", lambda self, *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(InputError, match="out of memory even for one frame"):
        run(pipeline, voice, batch_size=1)


def test_no_shell_strings():
    source = subprocess.run([sys.executable, "-c", "import pcavs, inspect, pcavs.video, pcavs.ffmpeg, pcavs.download;"
                             "print(inspect.getsource(pcavs.video) + inspect.getsource(pcavs.ffmpeg))"],
                            capture_output=True, text=True, check=True).stdout
    assert "shell=True" not in source and "os.system" not in source


@settings(max_examples=12, deadline=None)
@given(
    seconds=st.floats(min_value=0.05, max_value=1.5),
    rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
    channels=st.integers(min_value=1, max_value=3),
)
def test_audio_front_end_properties(tmp_path_factory, seconds, rate, channels):
    path = tmp_path_factory.mktemp("prop") / "a.wav"
    sf.write(path, tone(seconds, rate, channels), rate)
    samples = audio.normalize_rms(audio.load_audio(path))
    assert abs(len(samples) - seconds * 16000) <= 2 + 16000 / rate
    frames = audio.num_frames(len(samples))
    assert frames == math.ceil(len(samples) / 640)
    windows = audio.frame_windows(audio.mel_spectrogram(samples), np.arange(frames))
    assert windows.shape == (frames, 1, 80, 20)
    assert np.isfinite(windows).all() and windows.min() >= 0 and windows.max() <= 1


@settings(max_examples=50, deadline=None)
@given(
    scale=st.floats(min_value=0.05, max_value=20),
    degrees=st.floats(min_value=-180, max_value=180),
    dx=st.floats(min_value=-5000, max_value=5000),
    dy=st.floats(min_value=-5000, max_value=5000),
)
def test_similarity_transforms_are_recovered(scale, degrees, dx, dy):
    angle = math.radians(degrees)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    source = ANCHOR_TARGETS @ rotation.T + (dx, dy)
    matrix = similarity_transform(source, ANCHOR_TARGETS)
    assert np.allclose(source @ matrix[:, :2].T + matrix[:, 2], ANCHOR_TARGETS, atol=1e-6)
