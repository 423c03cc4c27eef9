"""The web app's "Live" tab: the microphone's chunks in, the prepared avatar's talking face out.

A `LiveSession` is one recording: the browser sends 100 ms chunks of the microphone (Gradio's streaming
audio), `feed` queues each and gives back the newest frame and the figures; a thread takes them as the
audio of `Pipeline.stream(avatar, chunks, realtime=True)` on one of the server's pipelines. When making
frames is slower than real time, the stream drops frames to stay in sync, and the page says how many.
"""
from __future__ import annotations

import base64
import collections
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError, PcavsError, one_line

IDLE = 3.0  # s without a chunk: the recording has ended (the browser stopped or went away)
RATE_WINDOW = 5.0  # s over which the frame rates are measured


@dataclass
class Figures:
    """What the page shows about a live session."""

    waiting: bool = True  # for a free pipeline
    made: int = 0  # frames made
    dropped: int = 0  # frames real-time mode left out to keep up
    latency: float = 0.0  # s from the end of a frame's audio reaching the server to the frame being made
    made_fps: float = 0.0
    shown_fps: float = 0.0
    error: str | None = None

    def text(self) -> str:
        if self.error:
            return f"**Stopped:** {self.error}"
        if self.waiting:
            return "Waiting for the device (other jobs are running)..." if self.made == 0 else "Starting..."
        line = (f"latency **{self.latency:.2f} s** · **{self.shown_fps:.1f} fps** shown "
                f"({self.made_fps:.1f} fps made) · {self.made} frames")
        if self.dropped:
            line += (f"\n\nThis machine makes frames slower than real time: **{self.dropped} frames dropped** "
                     "to stay in sync with the voice.")
        return line


def jpeg_html(image: np.ndarray) -> str:
    """An RGB frame as an <img> with its JPEG inline (no file per frame)."""
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise PcavsError("could not encode a frame as JPEG")
    return f'<img alt="the live face" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">'


def mono(samples: np.ndarray) -> np.ndarray:
    """The browser's chunk (int16, mono or interleaved channels) as one channel."""
    samples = np.asarray(samples)
    return samples if samples.ndim == 1 else samples.mean(axis=1).astype(samples.dtype)


class LiveSession:
    """One recording: chunks in through `feed`, frames made on a server pipeline's own thread."""

    def __init__(self, jobs, avatar_of, sample_rate: int):
        self.jobs = jobs
        self.avatar_of = avatar_of  # pipeline -> the avatar to animate (prepared once per photo)
        self.sample_rate = sample_rate
        self.figures = Figures()
        self.frame: np.ndarray | None = None
        self._chunks: queue.SimpleQueue = queue.SimpleQueue()
        self._made: collections.deque = collections.deque()  # clock times of recent frames made
        self._shown: collections.deque = collections.deque()
        self._last_shown = -1
        self._index = -1
        self.thread = threading.Thread(target=self._run, name="pcavs-live", daemon=True)
        self.thread.start()

    def feed(self, sample_rate: int, samples: np.ndarray) -> tuple[str | None, str]:
        """Queue a chunk; (the newest frame as HTML, or None when it is the one already shown; the figures)."""
        if sample_rate != self.sample_rate:
            raise InputError(f"the microphone changed its rate ({self.sample_rate} -> {sample_rate} Hz) mid-recording")
        self._chunks.put(mono(samples))
        html = None
        if self.frame is not None and self._index != self._last_shown:
            self._last_shown = self._index
            html = jpeg_html(self.frame)
            self._tick(self._shown)
        self.figures.shown_fps = self._rate(self._shown)
        return html, self.figures.text()

    def stop(self) -> None:
        """The recording ended: the stream finishes the frames of the audio it has."""
        self._chunks.put(None)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def _audio(self):
        while True:
            try:
                chunk = self._chunks.get(timeout=IDLE)
            except queue.Empty:
                return
            if chunk is None:
                return
            yield chunk

    def _run(self) -> None:
        def frames(pipeline):
            stream = pipeline.stream(self.avatar_of(pipeline), self._audio(), sample_rate=self.sample_rate,
                                     realtime=True, mode="crop", progress=False)
            for frame in stream:
                yield frame, stream.latency, stream.dropped

        try:
            for frame, latency, dropped in self.jobs.iterate(frames):
                self.figures.waiting = False
                self.frame, self._index = frame.image, frame.index
                self._tick(self._made)
                self.figures.made += 1
                self.figures.made_fps = self._rate(self._made)
                self.figures.latency, self.figures.dropped = latency, dropped
        except PcavsError as exc:
            self.figures.error = one_line(exc)
        except Exception as exc:  # noqa: BLE001 - shown in the page; the server goes on
            self.figures.error = f"internal error: {type(exc).__name__}: {one_line(exc)}"

    @staticmethod
    def _tick(times: collections.deque) -> None:
        now = time.monotonic()
        times.append(now)
        while times and now - times[0] > RATE_WINDOW:
            times.popleft()

    @staticmethod
    def _rate(times: collections.deque) -> float:
        if len(times) < 2:
            return 0.0
        span = max(times[-1] - times[0], time.monotonic() - times[0])
        return (len(times) - 1) / span if span > 0 else 0.0
