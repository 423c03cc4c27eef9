"""`Pipeline.stream`: frames as the voice arrives equal `run`'s whatever the chunks, the lookahead holds, avatars,
real-time mode drops frames but never changes one, segments, an abandoned stream leaves nothing behind, the stage
named for a watcher, and pose frames read as the frames reach them.

The generator is the slow part (seconds per frame on a CPU), and these tests make the same frames many ways. So
`remembered` runs the real generator once per distinct input (its exact bytes) and gives the same output when
the same input comes again: a stream that feeds it anything else makes new frames and fails the comparison.
The real-time test uses `stand_in`, a cheap generator that still depends on every style value and noise map.
"""
from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pcavs
from pcavs.generation import pipeline as pipelines, stream as streaming
from pcavs.generation.avatar import PoseCodes
from pcavs.media.audio import load_speech

from support.faces import fitted
from support.generators import remember, stand_in
from support.kits import INPUTS
from support.media import tone

CROP = str(INPUTS / "identity" / "000000.png")
POSE = sorted(str(p) for p in (INPUTS / "pose").glob("*.png"))[:3]
CHUNKS = (1, 160, 640, 16000, "random")


@pytest.fixture(scope="module")
def remembered(pipeline):
    """The real generator, each distinct input computed once (see the module's docstring)."""
    with pytest.MonkeyPatch.context() as patch:
        remember(patch, type(pipeline.networks.G))
        yield


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    """0.14 s of a voice: 4 frames, each reading rows before the audio or the padding after it."""
    path = tmp_path_factory.mktemp("voice") / "voice.wav"
    sf.write(path, tone(0.14, 16000), 16000)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A photo with the kit's face turned by 5 degrees in it (for full mode)."""
    import cv2

    canvas, _ = fitted(1.1, 5.0)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    cv2.imwrite(str(path), canvas[:, :, ::-1])
    return path


def chunks_of(samples: np.ndarray, size, seed: int = 0, seen: list | None = None):
    """`samples` in chunks of `size` (or random sizes from 1 to 1500), counting in `seen` what was taken."""
    rng = np.random.default_rng(seed)
    start = 0
    while start < len(samples):
        step = int(rng.integers(1, 1500)) if size == "random" else size
        chunk = samples[start : start + step]
        start += len(chunk)
        if seen is not None:
            seen.append(start)
        yield chunk


def job(mode: str, photo: Path) -> dict:
    if mode == "full":
        return dict(face=str(photo), mode=mode)
    return dict(face=CROP, mode=mode, aligned=True, pose=POSE if mode == "grid" else None)


@pytest.mark.parametrize("mode", ["crop", "full", "grid"])
def test_frames_equal_run_whatever_the_chunks(pipeline, remembered, voice, photo, mode):
    given = job(mode, photo)
    face, pose = given.pop("face"), given.pop("pose", None)
    samples = load_speech(voice)

    def offline(**options):
        return pipeline(face, voice, pose, out=None, return_frames=True, progress=False, **given, **options).frames

    whole = offline(batch_size=1)
    assert len(whole) == 4
    streamed = list(pipeline.stream(face, voice, pose, batch_size=1, **given))  # a file: its whole-clip loudness
    assert [f.index for f in streamed] == [0, 1, 2, 3] and [f.time for f in streamed] == [0, 0.04, 0.08, 0.12]
    assert all(np.array_equal(f.image, whole[f.index]) for f in streamed)

    running = offline(batch_size=1, loudness="running")
    assert not np.array_equal(running, whole)  # the rule for chunks is another loudness, stated and selectable
    for size in CHUNKS:
        frames = list(pipeline.stream(face, chunks_of(samples, size), pose, batch_size=1, **given))
        assert [f.index for f in frames] == [0, 1, 2, 3], size
        for frame in frames:
            assert frame.image.dtype == np.uint8 and np.array_equal(frame.image, running[frame.index]), (size, frame.index)
    if mode == "crop":  # other batch sizes: within one level
        batched = offline(loudness="running", batch_size=4)
        frames = list(pipeline.stream(face, chunks_of(samples, 640), pose, batch_size=4, **given))
        assert np.abs(np.stack([f.image for f in frames]).astype(int) - batched).max() <= 1


def test_enhance_works_in_the_stream(pipeline, remembered, voice, gfpgan_checkpoint, monkeypatch):
    from pcavs.restore.gfpgan import GFPGAN

    remember(monkeypatch, GFPGAN)  # GFPGAN too: seconds per face on a CPU
    options = dict(aligned=True, mode="grid", enhance="gfpgan", enhance_checkpoint=gfpgan_checkpoint, batch_size=1,
                   enhance_weight=0.7, noise="random", seed=2)
    offline = pipeline(CROP, voice, out=None, return_frames=True, progress=False, loudness="running", **options).frames
    samples = load_speech(voice)
    frames = [f.image for f in pipeline.stream(CROP, chunks_of(samples, 999), **options)]
    assert np.array_equal(np.stack(frames), offline) and offline.shape == (4, 24 + 512, 2 * 512, 3)


@pytest.mark.parametrize("size", [1, 160, "random"])
def test_the_lookahead_holds(pipeline, remembered, voice, size):
    assert pcavs.Pipeline.lookahead == pytest.approx(0.08)
    samples = load_speech(voice)
    seen: list[int] = []
    stream = pipeline.stream(CROP, chunks_of(samples, size, seed=3, seen=seen), aligned=True, mode="crop", batch_size=1)
    for frame in stream:
        bound = (frame.index + 1) * 0.04 + pipeline.lookahead
        before = seen[-2] if len(seen) > 1 else 0  # the audio in before the last chunk taken
        assert before / 16000 < bound - 1e-9, (frame.index, before)  # no chunk taken that was not needed
        if size != "random" and seen[-1] < len(samples):
            assert seen[-1] / 16000 <= bound + 1e-9
    assert seen[-1] == len(samples)


def test_an_avatar_gives_the_frames_of_its_photo(pipeline, remembered, tmp_path):
    voice = tmp_path / "two frames.wav"
    sf.write(voice, tone(0.07, 16000), 16000)
    offline = pipeline(CROP, voice, POSE, out=None, aligned=True, return_frames=True, progress=False, batch_size=1).frames
    avatar = pipeline.prepare(CROP, POSE, aligned=True)  # every pose frame, whatever the voice's length
    assert isinstance(avatar, pcavs.Avatar) and len(avatar.pose_codes) == 3 and len(offline) == 2
    again = pipeline(avatar, voice, out=None, return_frames=True, progress=False, batch_size=1).frames
    assert np.array_equal(again, offline)
    streamed = [f.image for f in pipeline.stream(avatar, voice, batch_size=1)]
    assert np.array_equal(np.stack(streamed), offline)
    with pytest.raises(pcavs.InputError, match="prepare it with mode='grid'"):
        pipeline(avatar, voice, out=None, mode="grid", progress=False)


class Clock:
    """The stream's clock, moved on only by the stand-in generator: STEP seconds per batch."""

    STEP = 0.2

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_realtime_drops_frames_but_never_changes_one(pipeline, monkeypatch, tmp_path):
    clock = Clock()
    monkeypatch.setattr(streaming, "clock", clock)

    def slow(self, spatial, style, noise=None):
        clock.now += Clock.STEP  # 5 frames of audio go by while one frame is made
        return stand_in(self, spatial, style, noise)

    monkeypatch.setattr(type(pipeline.networks.G), "forward", slow)
    path = tmp_path / "voice.wav"
    sf.write(path, tone(1.0, 16000), 16000)
    samples = load_speech(path)
    options = dict(aligned=True, mode="crop", noise="random", seed=5, loudness="running")
    offline = pipeline(CROP, path, out=None, return_frames=True, progress=False, batch_size=1, **options).frames
    stream = pipeline.stream(CROP, chunks_of(samples, 160), realtime=True, **options)
    latencies, frames = [], []
    for frame in stream:
        frames.append(frame)
        latencies.append(stream.latency)
    assert len(frames) + stream.dropped == len(offline) == 25
    assert stream.dropped >= 15  # about 4 of every 5
    bound = Clock.STEP + pipeline.lookahead + 1 * 0.04 + 160 / 16000  # one batch's work + what it waits for
    assert 0 < max(latencies) <= bound + 1e-9
    for frame in frames:
        assert np.array_equal(frame.image, offline[frame.index]), frame.index  # its own audio, its own noise


def test_realtime_waits_for_a_sound_while_quiet_so_the_sound_is_made_at_once(pipeline, monkeypatch, tmp_path):
    clock = Clock()
    monkeypatch.setattr(streaming, "clock", clock)
    def slow(self, spatial, style, noise=None):
        clock.now += Clock.STEP
        return stand_in(self, spatial, style, noise)

    def microphone(samples):  # a live source: each 10 ms chunk comes when the clock reaches its end
        for first in range(0, len(samples), 160):
            clock.now = max(clock.now, 100.0 + (first + 160) / 16000)
            yield samples[first:first + 160]

    monkeypatch.setattr(type(pipeline.networks.G), "forward", slow)
    voice = np.zeros(48000, np.float32)  # 3 s: quiet, a 0.2 s sound at 1.5 s, quiet
    voice[24000:27200] = tone(0.2, 16000)
    options = dict(aligned=True, mode="crop", loudness="running", batch_size=1)
    sf.write(tmp_path / "voice.wav", voice, 16000)
    offline = pipeline(CROP, tmp_path / "voice.wav", out=None, return_frames=True, progress=False, **options).frames
    stream = pipeline.stream(CROP, microphone(load_speech(tmp_path / "voice.wav")), realtime=True, **options)
    frames = {frame.index: (frame, stream.latency) for frame in stream}
    assert len(frames) + stream.dropped == len(offline) == 75
    before = [i for i in frames if i < 37]  # frames whose own audio ends before the sound (in block 37)
    assert len(before) <= 2, sorted(frames)  # the first frame, then the stream waits while it is quiet
    answer = min(i for i in frames if i >= 37)
    assert frames[answer][1] <= Clock.STEP + pipeline.lookahead + 0.04 + 0.01 + 1e-9  # one frame's work, not two
    for index, (frame, _) in frames.items():
        assert np.array_equal(frame.image, offline[index]), index


def test_a_stream_plays_as_segments_equal_to_its_mp4(pipeline, remembered, voice, tmp_path):
    av = pytest.importorskip("av")
    stream = pipeline.stream(CROP, voice, aligned=True, mode="crop", batch_size=1)
    out = tmp_path / "talk.mp4"
    segments = list(stream.segments(tmp_path / "segments", out=out, seconds=0.08))
    assert [p.name for p in segments] == ["segment00000.ts", "segment00001.ts"]
    with av.open(str(out)) as whole:
        frames = [f.to_ndarray(format="rgb24") for f in whole.decode(video=0)]
    assert len(frames) == 4
    parts = []
    for path in segments:
        with av.open(str(path)) as part:
            parts += [f.to_ndarray(format="rgb24") for f in part.decode(video=0)]
    assert np.array_equal(np.stack(parts), np.stack(frames))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["segment00000.ts", "segment00001.ts", "segments", "talk.mp4"]


def test_an_abandoned_stream_leaves_no_file_and_no_thread(pipeline, remembered, voice, tmp_path):
    before = set(threading.enumerate())
    samples = load_speech(voice)
    stream = pipeline.stream(CROP, chunks_of(samples, 640), aligned=True, mode="crop", batch_size=1)
    segments = stream.segments(tmp_path / "segments", out=tmp_path / "talk.mp4", seconds=0.04)
    first = next(segments)
    assert first.is_file()
    segments.close()  # the consumer stops half-way
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["segment00000.ts", "segments"]

    realtime = pipeline.stream(CROP, voice, aligned=True, mode="crop", realtime=True)  # a file played as live
    assert next(realtime).index == 0
    del realtime, stream, segments
    gc.collect()
    assert set(threading.enumerate()) <= before


def test_chunks_at_another_rate_and_of_integers(pipeline, monkeypatch):
    monkeypatch.setattr(type(pipeline.networks.G), "forward", stand_in)
    voice = tone(0.2, 48000)
    chunks = (np.round(voice[i : i + 4800] * 32767).astype(np.int16) for i in range(0, len(voice), 4800))
    frames = list(pipeline.stream(CROP, chunks, sample_rate=48000, aligned=True, mode="crop"))
    assert [f.index for f in frames] == list(range(5))  # 0.2 s at 25 fps


@pytest.mark.parametrize("audio, options, message", [
    ([np.zeros((10, 2), np.float32)], {}, "1-D mono PCM chunks"),
    ([np.zeros(100, np.float32)], {}, "give at least 40 ms"),
    ([np.zeros(1000, np.float32)], {"loudness": "whole"}, "'whole' needs the whole recording"),
    ([np.zeros(1000, np.float32)], {"sample_rate": 0}, "sample_rate: 0"),
    (np.zeros(1000, np.float32), {}, "an iterable of 1-D float32 PCM chunks"),
    ([np.zeros(1000, np.float32)], {"realtime": True, "enhance": "gfpgan", "enhance_smooth": 0.5}, "enhance_smooth"),
    ([np.zeros(1000, np.float32)], {"moed": "crop"}, "did you mean 'mode'"),
])
def test_bad_stream_input_is_one_line(pipeline, audio, options, message):
    with pytest.raises(pcavs.InputError, match=message):
        list(pipeline.stream(CROP, audio, aligned=True, **options))


def test_the_stage_names_what_the_job_does(pipeline, monkeypatch, voice):
    """A watcher thread reads `stream.stage` while the main thread waits in `next(stream)`; each step waits until
    the watcher has seen the stage it runs in, so none goes by unseen."""
    seen: list[str] = []
    streams: list[pcavs.FrameStream] = []

    def seen_now() -> None:
        deadline = time.monotonic() + 10
        while (not seen or seen[-1] != streams[0].stage) and time.monotonic() < deadline:
            time.sleep(0.001)

    def waiting(work):
        def run(*args, **kwargs):
            seen_now()
            return work(*args, **kwargs)

        return run

    monkeypatch.setattr(streaming, "load_speech", waiting(streaming.load_speech))
    monkeypatch.setattr(pipelines, "load_identities", waiting(pipelines.load_identities))
    monkeypatch.setattr(PoseCodes, "read", waiting(PoseCodes.read))
    monkeypatch.setattr(type(pipeline.networks.G), "forward", waiting(stand_in))
    streams.append(pipeline.stream(CROP, voice, POSE, aligned=True, mode="crop"))
    ended = threading.Event()

    def watch() -> None:
        while not ended.is_set():
            if not seen or seen[-1] != streams[0].stage:
                seen.append(streams[0].stage)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert len(list(streams[0])) == 4
        seen_now()
    finally:
        ended.set()
        watcher.join()
    assert seen == ["reading the voice", "finding the face", "reading the head motion", "making frames", "done"]


def test_pose_frames_are_read_as_the_frames_reach_them(pipeline, monkeypatch, tmp_path):
    """The first frame waits only for the first batch of pose frames; a frame past the frames read so far reads
    the source to its end (ping-pong needs its length); the frames equal those of an avatar encoded up front."""
    monkeypatch.setattr(type(pipeline.networks.G), "forward", stand_in)
    pose = (POSE * 4)[:10]
    voice = tmp_path / "voice.wav"
    sf.write(voice, tone(0.5, 16000), 16000)  # 13 frames: frame 10 turns back through the 10 pose frames
    taken: list[int] = []
    aligned = pipelines.aligned_frames

    def counted(*args):
        for crop in aligned(*args):
            taken.append(1)
            yield crop

    monkeypatch.setattr(pipelines, "aligned_frames", counted)
    stream = pipeline.stream(CROP, voice, pose, aligned=True, mode="crop", batch_size=1)
    frames = [next(stream)]
    assert len(taken) == pipeline.default_batch_size() == 4
    frames += [next(stream) for _ in range(4)]
    assert len(taken) == 8  # frame 4 read the second batch
    frames += list(stream)
    assert len(taken) == 10 and [f.index for f in frames] == list(range(13))
    avatar = pipeline.prepare(CROP, pose, aligned=True)
    assert len(avatar.pose_codes) == 10
    offline = pipeline(avatar, voice, out=None, return_frames=True, progress=False, mode="crop", batch_size=1).frames
    assert np.array_equal(np.stack([f.image for f in frames]), offline)
