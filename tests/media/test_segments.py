"""Segments that play while a video is made: played in order they are the finished mp4 (the same frames and
samples), each starts with a keyframe, the sound is in sync, and nothing unfinished is ever left behind."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pcavs.core.errors import InputError, PcavsError
from pcavs.media.probe import probe
from pcavs.media.segments import SegmentWriter

av = pytest.importorskip("av")
FRAMES = 55  # 2.2 s at 25 fps
CLICKS = (5000, 15000, 27000)  # samples where a 2.5 ms burst of noise sounds


def picture(index: int) -> np.ndarray:
    image = np.full((64, 96, 3), 40, np.uint8)
    image[:, (index * 3) % 90 : (index * 3) % 90 + 6] = (220, 120, 30)
    return image


def sound() -> np.ndarray:
    samples = (0.05 * np.sin(2 * math.pi * 300 * np.arange(FRAMES * 640) / 16000)).astype(np.float32)
    rng = np.random.default_rng(0)
    for at in CLICKS:
        samples[at : at + 40] = rng.uniform(-0.8, 0.8, 40)
    return samples


def write(folder, **options) -> list:
    samples = sound()
    with SegmentWriter(folder, **options) as writer:
        done = []
        for index in range(FRAMES):
            done += writer.write(picture(index), samples[index * 640 : (index + 1) * 640])
        return done + writer.finish()


def decode(paths) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Frames and samples of files played one after another, each stream through one decoder (as a player
    does), and whether each file starts with a keyframe."""
    video = audio = None
    frames, samples, starts = [], [], []
    for path in paths:
        with av.open(str(path)) as container:
            streams = {"video": container.streams.video[0], "audio": container.streams.audio[0]}
            if video is None:
                video = av.CodecContext.create(streams["video"].codec_context.name, "r")
                video.extradata = streams["video"].codec_context.extradata
                audio = av.CodecContext.create(streams["audio"].codec_context.name, "r")
                audio.extradata = streams["audio"].codec_context.extradata
            first = True
            for packet in container.demux():
                if not packet.size:
                    continue
                if packet.stream.type == "video":
                    if first:
                        starts.append(packet.is_keyframe)
                        first = False
                    frames += [f.to_ndarray(format="rgb24") for f in video.decode(packet)]
                else:
                    samples += [f.to_ndarray()[0] for f in audio.decode(packet)]
    frames += [f.to_ndarray(format="rgb24") for f in video.decode(None)]
    samples += [f.to_ndarray()[0] for f in audio.decode(None)]
    return np.stack(frames), np.concatenate(samples), starts


@pytest.mark.parametrize("suffix", [".ts", ".mp4"])
def test_segments_played_in_order_are_the_finished_mp4(tmp_path, suffix):
    out = tmp_path / "whole.mp4"
    segments = write(tmp_path / "parts", out=out, seconds=0.5, suffix=suffix)
    assert [p.name for p in segments] == [f"segment{k:05d}{suffix}" for k in range(5)]  # 12 + 12 + 12 + 12 + 7 frames
    info = probe(out)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 96, 64)
    with av.open(str(out)) as whole:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in whole.decode(video=0)])
    with av.open(str(out)) as whole:
        samples = np.concatenate([f.to_ndarray()[0] for f in whole.decode(audio=0)])
    assert len(frames) == FRAMES and np.abs(frames.astype(int) - [picture(i) for i in range(FRAMES)]).mean() < 3
    parts, heard, starts = decode(segments)
    assert np.array_equal(parts, frames) and all(starts)
    priming = len(heard) - len(samples)  # the AAC encoder's delay: the mp4s' edit lists hide it, MPEG-TS does not
    assert priming == (1024 if suffix == ".ts" else 0) and np.array_equal(heard[priming:], samples)
    for at in CLICKS:  # the sound plays with its frames: each click within 3 ms of where it was written
        found = at - 2000 + int(np.argmax(np.abs(samples[at - 2000 : at + 2000])))
        assert abs(found - at) <= 48, (at, found)


def test_without_out_only_segments_are_written(tmp_path):
    segments = write(tmp_path, seconds=1.0)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["segment00000.ts", "segment00001.ts", "segment00002.ts"]
    frames, _, starts = decode(segments)
    assert len(frames) == FRAMES and starts == [True] * 3


def test_a_writer_stopped_half_way_leaves_only_the_segments_it_gave(tmp_path):
    given = []
    with pytest.raises(KeyboardInterrupt):
        with SegmentWriter(tmp_path, out=tmp_path / "whole.mp4", seconds=0.2) as writer:
            for index in range(FRAMES):
                given += writer.write(picture(index), np.zeros(640, np.float32))
                if index == 7:
                    raise KeyboardInterrupt
    assert [p.name for p in given] == ["segment00000.ts"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segment00000.ts"]  # no .part file, no whole.mp4


def test_bad_segment_arguments(tmp_path):
    with pytest.raises(InputError, match="segments are .ts or .mp4"):
        SegmentWriter(tmp_path, suffix=".mkv")
    with pytest.raises(InputError, match="an .mp4 file"):
        SegmentWriter(tmp_path, out=tmp_path / "x.avi")
    with pytest.raises(InputError, match="positive number of seconds"):
        SegmentWriter(tmp_path, seconds=0)
    with SegmentWriter(tmp_path) as writer:
        with pytest.raises(PcavsError, match="no frames were written"):
            writer.finish()
        writer.write(picture(0), np.zeros(640, np.float32))
        with pytest.raises(ValueError, match="this video needs"):
            writer.write(np.zeros((10, 10, 3), np.uint8), np.zeros(640, np.float32))
    assert list(tmp_path.iterdir()) == []
