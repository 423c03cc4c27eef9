"""pcavs.video on real files made at test time: audio from any container, frames at 25 fps by timestamp, the mp4 writer."""
from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest

from pcavs.media import video
from pcavs.core.errors import InputError, PcavsError
from pcavs.media.probe import probe
from pcavs.media.audio import read_audio
from pcavs.media.ffmpeg import ffmpeg_exe
from pcavs.media.video import FPS, VideoWriter, iter_frames

from support.av import (
    aligned_similarity, counter_image, counter_video, decoded_timeline, encode_audio, ffmpeg, frame_times,
    phone_video, read_counter, shown_at, speech_like, vfr_video, write_wav,
)

RATE = 48000
SECONDS = 1.5
TINY_H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "10", "-pix_fmt", "yuv420p")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def stereo(media):
    """(wav path, float samples as stored in the 16-bit wav): 1.5 s of 48 kHz stereo, channels different."""
    samples = speech_like(SECONDS, RATE, 2, seed=1)
    path = write_wav(media / "stereo.wav", samples, RATE)
    return path, np.round(samples * 32768) / 32768


def leftover_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ read_audio

VIDEO_TRACK = ("-f", "lavfi", "-i", "color=gray:s=64x48:r=25:d=1.5")
# container -> codecs when the sound is the audio track of a video; None: an audio file (media_av.AUDIO_FORMATS)
CONTAINERS = {
    "wav": None, "flac": None, "mp3": None, "m4a": None, "ogg": None, "opus": None,
    "mp4": (*TINY_H264, "-c:a", "aac", "-b:a", "192k"),
    "mov": (*TINY_H264, "-c:a", "pcm_s16le"),
    "webm": ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", "-b:a", "128k"),
    "mkv": (*TINY_H264, "-c:a", "flac"),
}


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_every_container_decodes_to_the_source_signal(tmp_path, stereo, container):
    source, reference = stereo
    path = tmp_path / f"speech.{container}"
    if container == "wav":
        path = source
    elif CONTAINERS[container] is None:
        encode_audio(source, path)
    else:
        ffmpeg("-i", str(source), *VIDEO_TRACK, "-map", "1:v", "-map", "0:a", *CONTAINERS[container], str(path))
    samples, rate = read_audio(path)
    assert rate == RATE and samples.dtype == np.float32 and samples.shape[1] == 2
    assert len(samples) == len(reference), (container, len(samples) - len(reference))
    lossless = container in ("wav", "flac", "mov", "mkv")
    for channel in range(2):
        lag, correlation, error = aligned_similarity(samples[:, channel], reference[:, channel], RATE)
        assert lag == 0, (container, channel, lag)
        assert correlation > (0.99999 if lossless else 0.99), (container, channel, correlation)
        assert error < (1e-6 if lossless else 0.12), (container, channel, error)  # lossy ones measured 0.03-0.07


@pytest.mark.parametrize("rate, channels", [(8000, 1), (16000, 1), (22050, 2), (44100, 2), (48000, 2), (96000, 1)])
def test_rates_and_channels_come_back_as_stored(tmp_path, rate, channels):
    original = speech_like(0.77, rate, channels, seed=rate)
    path = write_wav(tmp_path / f"a{rate}.wav", original, rate, codec="pcm_f32le")
    samples, native = read_audio(path)
    assert native == rate and samples.shape == original.shape
    np.testing.assert_array_equal(samples, original)  # float wav: bit-exact, channels in order
    mono, _ = read_audio(path, mono=True)
    assert mono.shape == (len(original), 1)
    np.testing.assert_allclose(mono[:, 0], original.mean(axis=1), atol=1e-7)


def test_resampling_and_mono_downmix(stereo):
    source, reference = stereo
    samples, rate = read_audio(source, sample_rate=16000, mono=True)
    assert rate == 16000 and samples.shape[1] == 1
    assert abs(len(samples) - len(reference) / 3) <= 1
    spectrum = np.fft.rfft(reference.mean(axis=1))  # ideal band-limited decimation by 3 as the yardstick
    expected = np.fft.irfft(spectrum[: len(reference) // 6 + 1], len(reference) // 3) / 3
    lag, correlation, _ = aligned_similarity(samples[:, 0], expected, 16000)
    assert lag == 0 and correlation > 0.999
    up, rate = read_audio(source, sample_rate=44100)
    assert rate == 44100 and up.shape[1] == 2 and abs(len(up) - SECONDS * 44100) <= 1
    with pytest.raises(ValueError):
        read_audio(source, sample_rate=0)


def test_long_audio_is_downmixed_while_streaming(tmp_path):
    path = tmp_path / "long.wav"  # 10 minutes of 16 kHz stereo: 77 MB as float32 stereo, 38 MB as mono
    ffmpeg("-f", "lavfi", "-i", "sine=f=220:r=16000:d=600", "-f", "lavfi", "-i", "sine=f=330:r=16000:d=600",
           "-filter_complex", "[0][1]amerge=inputs=2", "-c:a", "pcm_s16le", str(path))
    tracemalloc.start()
    try:
        samples, rate = read_audio(path, mono=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rate == 16000 and samples.shape == (600 * 16000, 1)
    assert peak < 1.3 * samples.nbytes, f"peak {peak / 1e6:.0f} MB for {samples.nbytes / 1e6:.0f} MB of samples"


def test_audio_errors_name_the_file(tmp_path):
    silent = counter_video(tmp_path / "silent clip.mp4", 5, 25, codec=TINY_H264)
    with pytest.raises(InputError, match="no audio track") as error:
        read_audio(silent)
    assert str(silent) in str(error.value)
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"ID3" + bytes(500))
    empty = tmp_path / "empty.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(empty))
    text = tmp_path / "notes.m4a"
    text.write_text("not audio at all\n")
    for path in (broken, empty, text, tmp_path / "missing.wav"):
        with pytest.raises(InputError) as error:
            read_audio(path)
        message = str(error.value)
        assert message.startswith(str(path)) and "\n" not in message, message


def stored_packets(path) -> tuple[list[tuple[int, int, int]], Fraction]:
    """(pts, duration, size) of the audio packets as stored, in order, and the stream's time base."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy",
                          "-f", "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    num, den = (int(x) for x in out.split("#tb 0: ")[1].split()[0].split("/"))
    rows = [line.split(",") for line in out.splitlines() if not line.startswith("#")]
    return [(int(r[2]), int(r[3]), int(r[4])) for r in rows], Fraction(num, den)


@pytest.mark.parametrize("suffix, extra", [("mp3", ()), ("m4a", ("-movflags", "+faststart"))])
def test_truncated_audio_gives_what_is_there(tmp_path, stereo, suffix, extra):
    """A file cut in half decodes without an error to exactly the audio its whole packets hold."""
    whole = encode_audio(stereo[0], tmp_path / f"whole.{suffix}", *extra)
    complete, rate = read_audio(whole)
    packets, base = stored_packets(whole)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    # the packets lie back to back at the end of the file (after the ID3 tag / the moov box): those wholly
    # before the cut are what is there, and they play until the end of the last one (the mp3 decoder also
    # gets the cut packet's frame out of the bytes it has: at most one packet more)
    first = len(data) - sum(size for _, _, size in packets)
    ends = np.cumsum([size for _, _, size in packets]) + first
    kept = int(np.searchsorted(ends, len(data) // 2, side="right"))
    assert 0 < kept < len(packets)
    pts, duration, _ = packets[kept - 1]
    expected = float((pts + duration) * base) * rate
    samples, got_rate = read_audio(cut)  # no error
    assert got_rate == rate and samples.shape[1] == 2
    assert expected - 1 <= len(samples) <= expected + float(duration * base) * rate + 1, (len(samples), expected)
    assert len(samples) < 0.6 * len(complete)
    assert np.allclose(samples, complete[: len(samples)], atol=1e-6)  # the same sound as the whole file's start


# ------------------------------------------------------------------ iter_frames

def counters(path, **kwargs) -> list[int]:
    return [read_counter(frame) for frame in iter_frames(path, **kwargs)]


@pytest.mark.parametrize("fps", [30, 24, 60, 25, "30000/1001"])
def test_constant_rates_are_resampled_by_timestamp(tmp_path, fps):
    frames = 48 if fps != 60 else 96  # 1.6 to 2 s
    path = counter_video(tmp_path / "c.mp4", frames, fps, codec=TINY_H264)
    times, end = frame_times(path)
    rate = float(Fraction(str(fps)))
    assert times == pytest.approx([i / rate for i in range(frames)], abs=1e-3)
    expected = [math.floor(k * rate / FPS + 1e-6) for k in range(math.ceil(frames / rate * FPS - 1e-6))]
    assert shown_at(times, end, FPS) == expected
    got = counters(path)
    assert got == expected


def test_variable_frame_rate(tmp_path):
    path = vfr_video(tmp_path / "vfr.mp4", [(10, 30), (8, 12), (20, 60), (6, 7.5), (9, 24)])
    times, end = frame_times(path)
    assert len(set(np.round(np.diff(times), 4))) >= 4  # really variable
    expected = shown_at(times, end, FPS)
    assert counters(path) == expected
    assert counters(path, fps=10) == shown_at(times, end, 10)


def test_phone_video_comes_out_upright(tmp_path):
    path = phone_video(tmp_path / "phone.mp4", 15, 30)
    frames = list(iter_frames(path))
    assert frames[0].shape == (160, 96, 3)  # portrait, as the phone showed it
    assert [read_counter(f) for f in frames] == [math.floor(k * 30 / 25) for k in range(13)]
    small = list(iter_frames(path, max_side=80))
    assert small[0].shape == (80, 48, 3) and read_counter(small[3]) == 3


def test_gif_webm_and_max_side(tmp_path):
    gif = counter_video(tmp_path / "c.gif", 12, 10, codec=())
    times, end = frame_times(gif)
    assert counters(gif) == shown_at(times, end, FPS) and len(shown_at(times, end, FPS)) == 30
    webm = counter_video(tmp_path / "c.webm", 20, 20, codec=("-c:v", "libvpx-vp9", "-deadline", "realtime",
                                                              "-cpu-used", "8", "-crf", "20", "-b:v", "0"))
    assert counters(webm) == [math.floor(k * 20 / 25) for k in range(25)]
    frames = list(iter_frames(webm, max_side=100))
    assert frames[0].shape == (75, 100, 3) and frames[0].flags.writeable
    with pytest.raises(ValueError):
        next(iter_frames(webm, max_side=0))


def test_frames_are_streamed_and_ffmpeg_stops_when_the_reader_does(tmp_path, monkeypatch):
    path = counter_video(tmp_path / "long.mp4", 250, 25, 320, 240, codec=TINY_H264)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_frames(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 250 and peak < 20 * 320 * 240 * 3  # never more than a few frames at once
    started = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(video.subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])
    frames = iter_frames(path)
    next(frames)
    frames.close()
    assert started and started[-1].poll() is not None  # ffmpeg is gone, not left decoding


def test_video_errors_name_the_file(tmp_path, stereo):
    with pytest.raises(InputError, match="no video stream"):
        iter_frames(stereo[0])
    clip = counter_video(tmp_path / "clip.mp4", 10, 25, codec=TINY_H264)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:300])
    for path in (broken, tmp_path / "missing.mp4"):
        with pytest.raises(InputError) as error:
            list(iter_frames(path))
        assert str(error.value).startswith(str(path))


# ------------------------------------------------------------------ VideoWriter

def write_counted(out, frames: int, audio=None, size=(160, 120)):
    with VideoWriter(out, *size, audio=audio) as writer:
        for k in range(frames):
            writer.write(counter_image(k, *size))
    return out


@pytest.mark.parametrize("kind", ["wav16k-mono", "mp3-44k-stereo", "mp4-audio-track", "opus"])
def test_writer_makes_an_mp4_in_step_with_its_audio(tmp_path, stereo, kind):
    source, _ = stereo
    if kind == "wav16k-mono":
        audio = write_wav(tmp_path / "voice.wav", speech_like(1.37, 16000, 1, seed=3), 16000)
    elif kind == "mp3-44k-stereo":
        audio = encode_audio(source, tmp_path / "voice.mp3", "-ar", "44100", "-t", "1.01")
    elif kind == "mp4-audio-track":
        audio = counter_video(tmp_path / "talk.mp4", 30, 30, 64, 48, audio=source, codec=(*TINY_H264, "-c:a", "aac"),
                              extra=("-t", "0.93"))
    else:
        audio = encode_audio(source, tmp_path / "voice.opus", "-t", "0.61")
    samples, rate = read_audio(audio)
    frames = math.ceil(len(samples) / rate * FPS)
    out = write_counted(tmp_path / "out.mp4", frames, audio=audio)
    info = probe(out)
    assert (info.video_codec, info.pix_fmt, info.audio_codec, info.fps) == ("h264", "yuv420p", "aac", 25.0)
    assert (info.width, info.height) == (160, 120)
    timeline = decoded_timeline(out)
    v_start, v_end, v_frames = timeline["video"]
    a_start, a_end, _ = timeline["audio"]
    assert (v_start, v_frames) == (0.0, frames) and v_end == pytest.approx(frames / FPS)
    assert a_start == 0.0  # the AAC priming is cut by the edit list, not played
    assert abs(v_end - a_end) <= 1 / FPS, (v_end, a_end)
    assert abs(a_end - len(samples) / rate) < 1e-3
    assert counters(out) == list(range(frames))
    back, back_rate = read_audio(out, sample_rate=rate)
    assert abs(len(back) - len(samples)) <= 2
    lag, correlation, _ = aligned_similarity(back.mean(axis=1), samples.mean(axis=1), rate)
    assert lag == 0 and correlation > 0.98, (lag, correlation)
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside the video
    print(f"{kind}: video {v_end:.4f} s, audio {a_end:.4f} s, difference {1000 * (v_end - a_end):.1f} ms")


def test_writer_without_audio_keeps_colours(tmp_path):
    colours = [(200, 30, 40), (20, 180, 60), (30, 40, 220), (128, 128, 128), (240, 240, 240), (12, 12, 12)]
    frame = np.zeros((64, 192, 3), np.uint8)
    for i, colour in enumerate(colours):
        frame[:, i * 32:(i + 1) * 32] = colour
    out = tmp_path / "colours.mov"
    with VideoWriter(out, 192, 64) as writer:
        for _ in range(3):
            writer.write(frame)
    info = probe(out)
    assert (info.has_audio, info.fps, info.video_codec, info.duration) == (False, 25.0, "h264", pytest.approx(0.12))
    back = next(iter_frames(out))
    for i, colour in enumerate(colours):
        assert np.abs(back[32, i * 32 + 16].astype(int) - colour).max() <= 4, (colour, back[32, i * 32 + 16])


@pytest.mark.parametrize("interrupt", [RuntimeError("model failed"), KeyboardInterrupt()])
def test_an_exception_leaves_no_file_and_keeps_the_old_one(tmp_path, interrupt):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous video")
    with pytest.raises(type(interrupt)):
        with VideoWriter(out, 160, 120) as writer:
            for k in range(5):
                writer.write(counter_image(k))
            assert len(leftover_files(tmp_path)) == 2  # the hidden temporary file beside `out`
            raise interrupt
    assert leftover_files(tmp_path) == ["out.mp4"] and out.read_bytes() == b"the previous video"
    write_counted(out, 4)
    assert len(list(iter_frames(out))) == 4 and leftover_files(tmp_path) == ["out.mp4"]


def _small_files():  # runs in ffmpeg's process: writes past 48 kB fail with EFBIG, as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (48_000, 48_000))


def test_ffmpeg_failing_mid_write_names_the_output_and_leaves_nothing(tmp_path, monkeypatch):
    real_popen = subprocess.Popen
    monkeypatch.setattr(video.subprocess, "Popen", lambda *a, **k: real_popen(*a, **{**k, "preexec_fn": _small_files}))
    noise = np.random.default_rng(0).integers(0, 256, (40, 120, 160, 3), dtype=np.uint8)
    out = tmp_path / "full disk.mp4"
    with pytest.raises(PcavsError) as error:
        with VideoWriter(out, 160, 120) as writer:
            for frame in noise:
                writer.write(frame)
    assert str(error.value).startswith(f"{out}: writing the video failed") and "\n" not in str(error.value)
    assert leftover_files(tmp_path) == []


def test_writer_refuses_bad_outputs_and_inputs(tmp_path, stereo):
    with pytest.raises(InputError, match="does not exist") as error:
        VideoWriter(tmp_path / "no such folder" / "out.mp4", 160, 120)
    assert str(tmp_path / "no such folder") in str(error.value)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match=r"does not exist \(a file has that name\)"):
        VideoWriter(blocker / "out.mp4", 160, 120)
    with pytest.raises(InputError, match="is a folder"):
        VideoWriter(tmp_path, 160, 120)
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 161, 120)
    silent = counter_video(tmp_path / "silent.mp4", 3, 25, codec=TINY_H264)
    with pytest.raises(InputError, match="no audio track"):
        VideoWriter(tmp_path / "out.mp4", 160, 120, audio=silent)
    with pytest.raises(ValueError, match="needs"):
        with VideoWriter(tmp_path / "out.mp4", 160, 120) as writer:
            writer.write(np.zeros((120, 160), np.uint8))
    with pytest.raises(PcavsError, match="no frames"):
        with VideoWriter(tmp_path / "out.mp4", 160, 120, audio=stereo[0]):
            pass
    assert leftover_files(tmp_path) == ["file.txt", "silent.mp4"]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux's /proc")
def test_writer_refuses_a_folder_where_no_file_can_be_created():
    """Root too: /proc is a folder that refuses new files, though os.access tells root it may write there."""
    with pytest.raises(InputError, match="^/proc: the output folder is not writable"):
        VideoWriter("/proc/pcavs.mp4", 160, 120)
    assert not os.path.exists("/proc/pcavs.mp4")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into a read-only folder")
def test_writer_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    with pytest.raises(InputError, match="not writable") as error:
        VideoWriter(folder / "out.mp4", 160, 120)
    assert str(error.value).startswith(str(folder))
    assert leftover_files(folder) == []
