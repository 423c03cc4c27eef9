"""The ffmpeg binary pcavs uses, and probe() on real files made at test time (plus reports of other ffmpeg versions)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from pcavs.core.errors import InputError
from pcavs.media.ffmpeg import ffmpeg_exe
from pcavs.media.probe import parse_report, probe

from support.av import counter_video, encode_audio, ffmpeg, phone_video, speech_like, write_wav


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """1.2 s of 48 kHz stereo speech-like sound as 16-bit wav."""
    return write_wav(tmp_path_factory.mktemp("ff") / "clip.wav", speech_like(1.2, 48000, 2), 48000)


def test_binary_is_imageio_ffmpeg_and_has_the_codecs(monkeypatch):
    import imageio_ffmpeg

    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    assert ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    encoders = {line.split()[1] for line in listing.splitlines() if line.startswith(" ") and len(line.split()) > 1}
    assert {"libx264", "aac", "libmp3lame", "libopus", "libvorbis", "flac"} <= encoders
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-decoders"], capture_output=True, text=True).stdout
    decoders = {line.split()[1] for line in listing.splitlines() if line.startswith(" ") and len(line.split()) > 1}
    assert {"h264", "hevc", "vp9", "aac", "mp3float", "opus", "vorbis", "flac", "gif"} <= decoders


@pytest.mark.parametrize("suffix, codec", [("wav", "pcm_s16le"), ("flac", "flac"), ("mp3", "mp3"), ("m4a", "aac"),
                                           ("ogg", "vorbis"), ("opus", "opus")])
def test_probe_audio_files(tmp_path, clip, suffix, codec):
    path = clip if suffix == "wav" else encode_audio(clip, tmp_path / f"clip.{suffix}")
    info = probe(path)
    assert (info.has_audio, info.has_video, info.audio_codec, info.channels) == (True, False, codec, 2)
    assert info.sample_rate == 48000
    assert info.duration == pytest.approx(1.2, abs=0.03)


def test_probe_video_with_sound_and_odd_names(tmp_path, clip):
    # a name ffmpeg would otherwise read as a protocol, an option, or with spaces and accents
    for name in ("concat:clip é.mp4", "-x.mp4"):
        path = counter_video(tmp_path / "made.mp4", 30, 30, 160, 120, audio=clip, extra=("-shortest",))
        path = path.rename(tmp_path / name)
        info = probe(path)
        assert (info.video_codec, info.pix_fmt, info.width, info.height, info.fps) == ("h264", "yuv420p", 160, 120, 30.0)
        assert (info.audio_codec, info.sample_rate, info.channels, info.rotation) == ("aac", 48000, 2, 0)


def test_probe_rotation_aspect_gif_and_cover_art(tmp_path, clip):
    phone = probe(phone_video(tmp_path / "phone.mp4", 5, 30))
    assert (phone.rotation, phone.width, phone.height, phone.coded_width, phone.coded_height) == (90, 96, 160, 160, 96)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=720x576:r=25:d=0.2", "-vf", "setsar=16/15", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(tmp_path / "pal.mp4"))
    pal = probe(tmp_path / "pal.mp4")  # DVD-style non-square pixels: shown 768 wide
    assert (pal.width, pal.height, pal.coded_width, pal.sar) == (768, 576, 720, pytest.approx(16 / 15))
    gif = probe(counter_video(tmp_path / "c.gif", 5, 10, codec=()))
    assert (gif.has_video, gif.has_audio, gif.video_codec, gif.fps) == (True, False, "gif", 10.0)
    ffmpeg("-i", str(clip), "-f", "lavfi", "-i", "color=red:s=64x64:d=1", "-frames:v", "1", "-map", "0", "-map", "1",
           "-c:a", "libmp3lame", "-c:v", "mjpeg", "-disposition:v", "attached_pic", str(tmp_path / "cover.mp3"))
    cover = probe(tmp_path / "cover.mp3")  # album art is not a video
    assert (cover.has_audio, cover.has_video, cover.audio_codec) == (True, False, "mp3")


def test_probe_many_channels(tmp_path):
    samples = np.repeat(speech_like(0.3, 16000), 6, axis=1)
    assert probe(write_wav(tmp_path / "six.wav", samples, 16000)).channels == 6
    ffmpeg("-f", "lavfi", "-i", "sine=r=8000:d=0.2", "-af", "pan=3c|c0=c0|c1=c0|c2=c0", str(tmp_path / "three.wav"))
    assert probe(tmp_path / "three.wav").channels == 3


@pytest.mark.parametrize("content", [b"", b"hello, not media", b"ID3" + bytes(300), b"\x00\x00\x00\x18ftypmp42" + bytes(64)])
def test_probe_refuses_what_is_not_media(tmp_path, content):
    path = tmp_path / "bad file.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError) as error:
        probe(path)
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_probe_missing_and_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        probe(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="is a folder"):
        probe(tmp_path)


# Reports as other ffmpeg builds print them (a system ffmpeg may be older): only the facts are checked.
OLD_PHONE_REPORT = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'IMG_0001.MOV':
  Metadata:
    major_brand     : qt
    creation_time   : 2021-05-01T10:00:00.000000Z
  Duration: 00:00:03.52, start: 0.000000, bitrate: 17234 kb/s
    Stream #0:0(und): Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv, bt709), 1920x1080, 17000 kb/s, 29.98 fps, 29.97 tbr, 600 tbn, 600 tbc (default)
    Metadata:
      rotate          : 90
      creation_time   : 2021-05-01T10:00:00.000000Z
    Side data:
      displaymatrix: rotation of -90.00 degrees
    Stream #0:1(und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 91 kb/s (default)
    Stream #0:2(und): Data: none (mebx / 0x7862656D), 0 kb/s (default)
At least one output file must be specified
"""

SURROUND_REPORT = """\
Input #0, matroska,webm, from 'film.mkv':
  Duration: 01:02:03.50, start: -0.007000, bitrate: 3000 kb/s
  Stream #0:0(eng): Video: h264 (High), yuv420p(tv, bt709, progressive), 1280x720 [SAR 1:1 DAR 16:9], 23.98 fps, 23.98 tbr, 1k tbn (default)
  Stream #0:1(eng): Audio: ac3, 48000 Hz, 5.1(side), fltp, 384 kb/s (default)
  Stream #0:2(eng): Subtitle: subrip
"""


def test_parse_reports_of_other_versions():
    phone = parse_report(OLD_PHONE_REPORT)
    assert (phone.video_codec, phone.rotation, phone.width, phone.height, phone.fps) == ("hevc", 90, 1080, 1920, 29.98)
    assert phone.base_fps == 29.97  # "tbr": a variable-rate phone clip's average and base rates differ
    assert (phone.audio_codec, phone.sample_rate, phone.channels, phone.duration) == ("aac", 44100, 1, 3.52)
    film = parse_report(SURROUND_REPORT)
    assert film.duration == pytest.approx(3723.5) and film.start == pytest.approx(-0.007)
    assert (film.width, film.height, film.fps, film.channels, film.audio_codec, film.pix_fmt) == (1280, 720, 23.98, 6, "ac3", "yuv420p")
