"""The audio front-end's decoding: every container and rate becomes the same 16 kHz mono signal.

Photos and detection: test_images/test_detect/test_align; video and audio I/O: test_video.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from pcavs.media.audio import load_speech
from pcavs.models import mel
from pcavs.media.audio import read_audio

from support.media import tone
from support.av import ffmpeg


@pytest.mark.parametrize("suffix, codec", [("wav", "pcm_s16le"), ("mp3", "libmp3lame"), ("m4a", "aac"), ("ogg", "libvorbis"),
                                           ("opus", "libopus"), ("flac", "flac"), ("mp4", "aac")])
def test_audio_containers_decode_to_the_same_signal(tmp_path, suffix, codec):
    source = tmp_path / "source.wav"
    reference = tone(1.5, 16000)
    sf.write(source, reference, 16000, subtype="PCM_16")
    path = tmp_path / f"speech.{suffix}"
    extra = ("-f", "lavfi", "-i", "color=black:s=64x64:d=1.5") if suffix == "mp4" else ()
    ffmpeg(*extra, "-i", str(source), "-c:a", codec, *(("-c:v", "libx264", "-shortest") if extra else ()), str(path))
    decoded = load_speech(path)
    assert abs(len(decoded) - len(reference)) < 0.08 * 16000
    n = min(len(decoded), len(reference))
    lag = int(np.argmax(np.correlate(decoded[:8000], reference[:4000], "valid"))) if len(decoded) > 8000 else 0
    aligned = decoded[lag:n]
    correlation = np.corrcoef(aligned, reference[: len(aligned)])[0, 1]
    assert correlation > 0.98, (suffix, lag, correlation)


@pytest.mark.parametrize("rate, channels", [(8000, 1), (44100, 2), (48000, 2), (22050, 1)])
def test_rates_and_channels_give_the_right_length(tmp_path, rate, channels):
    path = tmp_path / f"a{rate}.wav"
    sf.write(path, tone(1.3, rate, channels), rate)
    samples, native = read_audio(path)
    assert native == rate and samples.shape[1] == channels
    decoded = load_speech(path)
    assert abs(len(decoded) - round(1.3 * 16000)) <= 2
    assert mel.num_frames(len(decoded)) == math.ceil(1.3 * 25)
