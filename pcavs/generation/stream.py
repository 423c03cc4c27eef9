"""Frames as the voice arrives: the audio feed of a job (a file, or chunks of PCM as they come), the clock of
real-time mode, and `FrameStream`, the iterator of `Frame`s that `Pipeline.stream` returns.

Frame f reads mel rows [(f - 2) * 4, (f - 2) * 4 + 20), and mel row r covers samples up to (r + 1) * 160, so
frame f is ready once 640 * (f + 3) samples are in: LOOKAHEAD (80 ms) after the end of its own 40 ms.

Real time: the stream's clock starts when the first chunk arrives, and sample n counts as heard at
start + n / 16000 (a source that delivers faster than that, such as a list of chunks or a file, is
taken as a live one; a pull that had to wait means the source is live and behind its clock, and the
clock follows it). Before each batch the stream takes all the audio the clock says has been spoken,
and when more frames are ready than one batch holds, it makes the newest batch and drops the older
frames: latency stays about one batch's work plus the lookahead. A device slower than real time would
otherwise be busy, when a sound comes, with a frame begun before it: so while the voice is quiet and a new
frame would only repeat the quiet one before it, the stream makes none and waits for a sound, then makes
that sound's own frame as soon as its lookahead is in (see `AudioFeed.quiet`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Generator, Iterable, Iterator, NamedTuple

import numpy as np

from ..core.errors import InputError
from ..core.facts import CROP_SIZE, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ..media.audio import MIN_SPEECH, load_speech
from ..models.mel import MEL_PER_FRAME, WINDOW_OFFSET, WINDOW_ROWS, MelStream, num_frames, whole_gain

LOOKAHEAD_FRAMES = WINDOW_ROWS // MEL_PER_FRAME - WINDOW_OFFSET - 1  # 2 frames of audio after a frame's own
LOOKAHEAD = LOOKAHEAD_FRAMES * SAMPLES_PER_FRAME / SAMPLE_RATE  # 0.08 s
QUIET = 0.01  # peak sample level (-40 dBFS) below which the voice is quiet
QUIET_BEFORE = WINDOW_OFFSET + 1  # 40 ms blocks of samples before a frame's own that its mel window reads
WAITED = 0.002  # s: a pull that took longer found the source empty (live, at its newest sample)
clock: Callable[[], float] = time.monotonic  # the stream's clock (tests replace it)
sleep: Callable[[float], None] = time.sleep


class Frame(NamedTuple):
    """One output frame: its `index`, its presentation `time` in seconds (index / 25) and the `image`
    (H x W x 3 uint8 RGB, composed as the job's `mode` says)."""

    index: int
    time: float
    image: np.ndarray


def as_samples(chunk) -> np.ndarray:
    """A chunk of mono PCM as float32: floats as they are, integers scaled to [-1, 1); NaN becomes silence."""
    samples = np.asarray(chunk)
    if samples.ndim != 1:
        raise InputError(f"audio: a chunk shaped {samples.shape}; give 1-D mono PCM chunks (mix the channels first)")
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples / np.float32(np.iinfo(samples.dtype).max + 1)
    elif not np.issubdtype(samples.dtype, np.floating):
        raise InputError(f"audio: a chunk of {samples.dtype}; give float32 (or int16) PCM samples")
    samples = samples.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    return samples


def check_audio(audio, loudness: str | None, sample_rate: int) -> None:
    """InputError unless `audio` is a file, or an iterable of chunks with a usable sample rate and loudness rule."""
    if audio is None or isinstance(audio, (str, os.PathLike)):
        return
    if isinstance(audio, (bytes, np.ndarray)) or not isinstance(audio, Iterable):
        raise InputError("audio: give a speech file, or an iterable of 1-D float32 PCM chunks (e.g. a generator)")
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise InputError(f"sample_rate: {sample_rate!r} must be a positive whole number of Hz")
    if loudness == "whole":
        raise InputError("loudness: 'whole' needs the whole recording, which a stream of chunks does not have; "
                         "leave loudness unset (or 'running') for chunks")


def paced(samples: np.ndarray) -> Iterator[np.ndarray]:
    """A whole recording played as a live source: one frame's samples at a time, each when the clock reaches its end."""
    start = clock()
    for first in range(0, len(samples), SAMPLES_PER_FRAME):
        stop = min(len(samples), first + SAMPLES_PER_FRAME)
        wait = start + stop / SAMPLE_RATE - clock()
        if wait > 0:
            sleep(wait)
        yield samples[first:stop]


class AudioFeed:
    """The voice of one job as it arrives, turned into mel rows (see `MelStream`) and frames that are ready.

    `audio` is a speech file (decoded at once; loudness "whole" by default, as the reference) or an
    iterable of 1-D PCM chunks at `sample_rate` (resampled to 16 kHz as they come; loudness "running").
    Nothing is read until `open`. With `keep`, the 16 kHz samples are kept until `take` hands them on (to
    the segment writer).
    """

    def __init__(self, audio, loudness: str | None, sample_rate: int = SAMPLE_RATE, realtime: bool = False):
        self.realtime = realtime
        self.keep = False  # set before `start`: keep the 16 kHz samples for `take`
        self.start: float | None = None  # clock time at which sample 0 was spoken (real time)
        self._kept: list[np.ndarray] = []
        self._kept_from = 0  # the first sample still kept
        self._peaks: list[float] = []  # real time: the peak level of each whole 40 ms block of samples in so far
        self._tail = np.zeros(0, np.float32)  # real time: the samples after the last whole block
        self._resampler = None
        self._waited = False
        self._loudness = loudness
        self._chunks: Iterator[np.ndarray] | None = None
        self.mel: MelStream | None = None  # a file's: made by `open`
        if isinstance(audio, (str, os.PathLike)):
            self.name = str(audio)
            self._file: Path | None = Path(audio)
            return
        check_audio(audio, loudness, sample_rate)
        self.name = "the audio chunks"
        self._file = None
        self.mel = MelStream(None)
        self._chunks = iter(audio)
        if sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def open(self) -> None:
        """Decode the file (once; chunks are taken as frames need them). Call it before the rest."""
        if self.mel is not None:
            return
        samples = load_speech(self._file)
        self.mel = MelStream(None if self._loudness == "running" else whole_gain(samples))
        if self.realtime:
            self._chunks = paced(samples)
        else:
            self._add(samples)
            self.mel.finish()

    @property
    def finished(self) -> bool:
        """Whether all the audio is in (and so the number of frames known)."""
        return self.mel is not None and self.mel.finished

    @property
    def samples(self) -> int:
        """16 kHz samples in so far."""
        return 0 if self.mel is None else self.mel.samples

    def ready(self) -> int:
        """How many frames can be made now (all of them once the audio has ended; none before `open`)."""
        if self.mel is None:
            return 0
        if self.mel.finished:
            return num_frames(self.mel.samples)
        return max(0, self.mel.rows // MEL_PER_FRAME - LOOKAHEAD_FRAMES)

    def next_frames(self, done: int, batch: int) -> tuple[int, int] | None:
        """The next frames to make, (first, stop), once their audio is in; frames [done, first) are dropped
        (real time only). None when the audio has ended and every frame is done."""
        self.open()
        while self.ready() <= done and self._pull():
            pass
        if self.realtime:  # all the audio the clock says was spoken by now, until the source has no more
            while (self.start is not None and self.samples < (clock() - self.start) * SAMPLE_RATE
                   and self._pull() and not self._waited):
                pass
        ready = self.ready()
        if ready <= done:
            return None
        first = max(done, ready - batch) if self.realtime else done
        return first, min(ready, first + batch)

    def heard(self, frame: int) -> float:
        """Clock time at which the end of frame `frame`'s own audio was spoken (real time)."""
        end = min(self.samples, (frame + 1) * SAMPLES_PER_FRAME)
        return (self.start or 0.0) + end / SAMPLE_RATE

    def quiet(self, first: int, stop: int) -> bool:
        """Real time: whether the voice that the mel windows of frames [first, stop) read, up to the end of the
        frames' own 40 ms (their lookahead left out), is quiet: every sample below QUIET."""
        blocks = self._peaks[max(0, first - QUIET_BEFORE):stop]
        return len(blocks) > 0 and max(blocks) < QUIET

    def wait(self) -> bool:
        """Real time: block until the next chunk is in; False once the audio has ended."""
        return self._pull()

    def take(self, stop: int) -> np.ndarray:
        """The kept 16 kHz samples up to `stop` (or to the end), handed on once."""
        kept = np.concatenate(self._kept) if self._kept else np.zeros(0, np.float32)
        count = max(0, min(stop, self._kept_from + len(kept)) - self._kept_from)
        self._kept = [kept[count:]] if count < len(kept) else []
        self._kept_from += count
        return kept[:count]

    def _pull(self) -> bool:
        """Take the next chunk; False once the audio has ended."""
        if self._chunks is None or self.mel.finished:
            return False
        before = clock()
        chunk = next(self._chunks, None)
        self._waited = clock() - before > WAITED
        if chunk is None:
            self._end()
            return False
        samples = as_samples(chunk)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        self._add(samples)
        now = clock()
        if self.start is None:  # a chunk arrives when its last sample has been spoken
            self.start = now - self.samples / SAMPLE_RATE
        elif self._waited:  # the source was empty: it is live, and its newest sample was spoken now
            self.start = max(self.start, now - self.samples / SAMPLE_RATE)
        return True

    def _add(self, samples: np.ndarray) -> None:
        self.mel.feed(samples)
        if self.keep:
            self._kept.append(samples)
        if self.realtime:
            self._tail = np.concatenate([self._tail, samples])
            whole = len(self._tail) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME
            self._peaks.extend(np.abs(self._tail[:whole]).reshape(-1, SAMPLES_PER_FRAME).max(axis=1).tolist())
            self._tail = self._tail[whole:]

    def _end(self) -> None:
        if self._resampler is not None:
            self._add(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        if self.samples < MIN_SPEECH:
            raise InputError(f"audio: {self.name} held {1000 * self.samples / SAMPLE_RATE:.0f} ms of audio; "
                             "give at least 40 ms of speech")
        self.mel.finish()


Batch = tuple[np.ndarray, list[np.ndarray], np.ndarray]  # frame indices, output frames, generated faces


class Progress:
    """What a job is doing, in words (see `FrameStream.stage`): set by the thread that runs the job, read by any."""

    def __init__(self) -> None:
        self.stage = "reading the voice"
        self.work = 0.0  # s the last batch took to make (its frames' work, no wait for audio)


class FrameStream:
    """The frames of `Pipeline.stream`, each as soon as the audio it needs is in: iterate for `Frame`s.

    Nothing runs until the first frame is asked for. `total` is the number of frames the job will
    have, once known (a file: when the first frame comes; chunks: when they end). `dropped` counts the
    frames real-time mode left out so far; `latency` is, for the last frame given, the seconds from the
    end of its own audio being spoken to the frame coming out (the lookahead included; negative when the
    source runs ahead of real time); `work` is the seconds the last batch took to make. `stage` says in
    words what the job is doing, for a progress display that another thread may read while one waits in
    `next(stream)`: "reading the voice", "finding the face", "reading the head motion", "making frames",
    then "done" once the stream has ended or been closed. `close()`, or dropping the stream, stops the
    work and leaves no file or thread behind.
    """

    lookahead = LOOKAHEAD

    def __init__(self, feed: AudioFeed, batches: Generator[Batch, None, None], progress: Progress,
                 keep_faces: bool = False):
        """`batches`: the job's frames in batches, made as `feed` has their audio; `progress`: the job's stage."""
        self.feed = feed
        self._faces: list[np.ndarray] | None = [] if keep_faces else None
        self.dropped = 0
        self.latency = 0.0
        self.frames = 0  # given so far
        self._batches = batches
        self._progress = progress
        self._started = False
        self._frames = self._run()

    def __iter__(self) -> "FrameStream":
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    @property
    def total(self) -> int | None:
        return self.feed.ready() if self.feed.finished else None

    @property
    def work(self) -> float:
        """Seconds the last batch took to make: the device's work, without the waits for audio."""
        return self._progress.work

    @property
    def stage(self) -> str:
        """What the job is doing now, in words (see the class docstring)."""
        return self._progress.stage

    @property
    def faces(self) -> np.ndarray:
        """return_faces=True: the generated 224x224 faces of the frames given so far, (N, 224, 224, 3) uint8 RGB."""
        if self._faces is None:
            raise InputError("faces: ask the stream for them with return_faces=True")
        return np.stack(self._faces) if self._faces else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)

    def close(self) -> None:
        """Stop here: the work ends, and the segment being written (and the unfinished mp4) are removed."""
        self._frames.close()
        self._batches.close()
        self._progress.stage = "done"

    def _run(self) -> Iterator[Frame]:
        self._started = True
        expected = 0
        for indices, images, faces in self._batches:
            self.dropped += int(indices[0]) - expected
            for index, image, face in zip(indices.tolist(), images, faces):
                self.latency = clock() - self.feed.heard(index)
                self.frames += 1
                if self._faces is not None:
                    self._faces.append(face)
                yield Frame(index, index / FPS, image)
            expected = int(indices[-1]) + 1
        self._progress.stage = "done"

    def segments(self, folder: str | os.PathLike, out: str | os.PathLike | None = None, seconds: float = 1.0,
                 suffix: str = ".ts") -> Iterator[Path]:
        """Play while it is made: the stream's frames and their sound (16 kHz mono) as segments of about
        `seconds` (H.264 + AAC, `.ts` or `.mp4` files in `folder`), each path given once its segment is
        complete; `out`, when given, gets the whole video as one mp4 from the same encode, atomically,
        when the stream ends. Closing the iterator early removes the unfinished segment and mp4.
        """
        with self.record(folder, out, seconds, suffix) as recording:
            for frame in self:
                yield from recording.add(frame)
            yield from recording.finish()

    def record(self, folder: str | os.PathLike | None, out: str | os.PathLike | None = None, seconds: float = 1.0,
               suffix: str = ".ts") -> "Recording":
        """A `Recording` of this stream, for a loop that also does something with each frame (see `segments`);
        folder=None writes only `out`."""
        if self._started:
            raise InputError("record: call it before taking frames from the stream")
        self.feed.keep = True
        return Recording(self.feed, folder, out, seconds, suffix)


class Recording:
    """A stream's frames and sound into segments and an mp4 (see `FrameStream.segments`): use as a context
    manager, `add` each frame the stream gives, then `finish`; each gives the segments it completed.

    A frame that real-time mode dropped is shown as the frame before it, so the sound stays in sync.
    """

    def __init__(self, feed: AudioFeed, folder, out, seconds: float, suffix: str):
        """`feed`: the stream's audio, which keeps its samples for the sound track."""
        from ..media.segments import SegmentWriter

        self.feed = feed
        self.writer = SegmentWriter(folder, out=out, seconds=seconds, suffix=suffix)
        self._last: np.ndarray | None = None

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc) -> None:
        self.writer.__exit__(*exc)

    def add(self, frame: Frame) -> list[Path]:
        done = []
        while self.writer.frames < frame.index:  # dropped frames: the last one shown again
            done += self.writer.write(frame.image if self._last is None else self._last, self._sound(self.writer.frames))
        self._last = frame.image
        return done + self.writer.write(frame.image, self._sound(frame.index))

    def finish(self) -> list[Path]:
        """The rest of the sound, the last segment, and `out` committed."""
        return self.writer.finish(self.feed.take(self.feed.samples))

    def _sound(self, index: int) -> np.ndarray:
        return self.feed.take((index + 1) * SAMPLES_PER_FRAME)
