"""Video that plays while it is made: frames and their sound -> segments of about a second (H.264 + AAC, `.ts` or
`.mp4` files that players and HLS servers such as Gradio's streaming video take), and the whole video as one mp4.

One encoder makes both: every packet of the single H.264 and AAC encode goes into the finished mp4 and into
the segment of its time, so the segments, played in order, are the finished mp4 (same frames, same
samples), and nothing is encoded twice. Each segment starts with a keyframe. The encoder is FFmpeg's
libraries inside the process (PyAV, `pip install av`: its wheels bundle libx264 and the AAC encoder).
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..core.errors import InputError, PcavsError
from ..core.facts import FPS, SAMPLE_RATE
from ..core.files import AtomicFile, folder_writable
from .video import X264_CRF

SUFFIXES = {".ts": "mpegts", ".mp4": "mp4"}
X264_OPTIONS = {"preset": "veryfast", "tune": "zerolatency", "crf": X264_CRF, "forced-idr": "1"}  # a packet per frame
AAC_BITRATE = 64000  # bit/s, for 16 kHz mono speech


def import_av():
    try:
        import av
    except ImportError:
        raise InputError("segments need PyAV: pip install 'pcavs[stream]' (or: pip install av)") from None
    return av


class SegmentWriter:
    """Writes frames (H x W x 3 uint8 RGB, 25 fps) and their sound (float32 mono at `sample_rate`) as segments of
    about `seconds` in `folder` (`segment00000.ts`, ... : one folder per video; None: no segments), and, when
    `out` is given, the whole video as one mp4.

    Use as a context manager: `write(image, samples)` gives the path of each segment that the frame
    completes, `finish(samples)` the last ones, and `out` appears, whole, when `finish` returns. Every
    file appears whole or not at all: leaving the block early (an exception, or a consumer that stops
    iterating) removes the unfinished segment and the unfinished mp4, and keeps the segments given.
    """

    def __init__(self, folder: str | os.PathLike | None, out: str | os.PathLike | None = None, seconds: float = 1.0,
                 suffix: str = ".ts", sample_rate: int = SAMPLE_RATE, fps: int = FPS):
        if suffix not in SUFFIXES:
            raise InputError(f"suffix: {suffix!r}: segments are {' or '.join(SUFFIXES)} files")
        if not seconds > 0:
            raise InputError(f"seconds: {seconds!r} must be a positive number of seconds")
        if folder is None and out is None:
            raise InputError("segments: give a folder for the segments, an out for the whole video, or both")
        self.av = import_av()
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not folder_writable(self.folder):
                raise InputError(f"{self.folder}: the segment folder is not writable; choose another")
        if out is not None and Path(out).suffix.lower() != ".mp4":
            raise InputError(f"out: {out}: the whole video is an .mp4 file")
        self.out = AtomicFile(out) if out is not None else None
        self.suffix = suffix
        self.per_segment = max(1, round(seconds * fps))  # frames
        self.sample_rate = sample_rate
        self.fps = fps
        self.frames = 0  # written so far
        self.samples = 0
        self.segments: list[Path] = []  # given so far
        self._container = None  # the whole video (a null muxer when there is no `out`)
        self._video = self._audio = None
        self._packets: list = []  # the current segment's packets, in the order they were muxed
        self._part: AtomicFile | None = None  # the segment being written

    def __enter__(self) -> "SegmentWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._container is not None:  # not finished: nothing unfinished is left behind
            try:
                self._container.close()
            except Exception:  # the file is being discarded; its trailer does not matter
                pass
            self._container = None
        if self._part is not None:
            self._part.discard()
        if self.out is not None:
            self.out.discard()

    def _open(self, height: int, width: int) -> None:
        av = self.av
        if self.out is not None:
            self._container = av.open(str(self.out.claim()), "w", format="mp4", options={"movflags": "+faststart"})
        else:
            self._container = av.open(os.devnull, "w", format="null")
        video = self._container.add_stream("libx264", rate=self.fps, options=dict(X264_OPTIONS))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        context = video.codec_context
        context.thread_count = 1  # the networks have the cores
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        context.color_range = 1  # limited ("tv")
        audio = self._container.add_stream("aac", rate=self.sample_rate, layout="mono")
        audio.bit_rate = AAC_BITRATE
        self._video, self._audio = video, audio

    def write(self, image: np.ndarray, samples: np.ndarray) -> list[Path]:
        """Add one frame and the samples that play with it; the segment it completes (none or one: a segment is
        written when the next one's first frame comes, or at `finish`, so that the last one has frames too)."""
        av = self.av
        if self._container is None:
            if self.frames:
                raise PcavsError("SegmentWriter: already finished")
            self._open(*image.shape[:2])
        if image.shape != (self._video.height, self._video.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame is {image.shape} {image.dtype}; this video needs "
                             f"{(self._video.height, self._video.width, 3)} uint8")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(
            format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG", threads=1,
            interpolation=av.video.reformatter.Interpolation.BICUBIC | av.video.reformatter.Interpolation.ACCURATE_RND)
        frame.pts, frame.time_base = self.frames, Fraction(1, self.fps)
        done = []
        if self.frames % self.per_segment == 0:
            frame.pict_type = av.video.frame.PictureType.I  # each segment starts with a keyframe
            if self._packets:  # the last segment is complete: its sound so far, and the AAC encoder's delay after it
                done.append(self._segment())
        self._mux(self._video.encode(frame))
        self._mux(self._sound(samples))
        self.frames += 1
        return done

    def finish(self, samples: np.ndarray | None = None) -> list[Path]:
        """The last samples (those after the last frame's); flush the encoders, write the last segment and
        commit `out`. The segments this completes."""
        if self._container is None:
            raise PcavsError("SegmentWriter: no frames were written, so no video was made")
        if samples is not None:
            self._mux(self._sound(samples))
        self._mux(self._video.encode(None))
        self._mux(self._audio.encode(None))
        done = [self._segment()] if self._packets else []
        self._container.close()
        self._container = None
        if self.out is not None:
            self.out.commit()
        return done

    def _sound(self, samples: np.ndarray) -> list:
        samples = np.ascontiguousarray(samples, np.float32).reshape(1, -1)
        if not samples.size:
            return []
        frame = self.av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self.sample_rate, self.samples, Fraction(1, self.sample_rate)
        self.samples += samples.shape[1]
        return self._audio.encode(frame)

    def _mux(self, packets: list) -> None:
        for packet in packets:
            self._container.mux(packet)
            if self.folder is not None:
                self._packets.append(packet)

    def _segment(self) -> Path:
        """The packets since the last segment, as the next segment file (streams copied from the whole
        video's, whose codec parameters are set once it has muxed its first packets)."""
        path = self.folder / f"segment{len(self.segments):05d}{self.suffix}"
        self._part = AtomicFile(path)
        segment = self.av.open(str(self._part.claim()), "w", format=SUFFIXES[self.suffix])
        try:
            streams = {"video": segment.add_stream_from_template(self._video),
                       "audio": segment.add_stream_from_template(self._audio)}
            for packet in self._packets:
                packet.stream = streams[packet.stream.type]
                segment.mux(packet)
        finally:
            segment.close()
        self._part.commit()
        self._part = None
        self._packets = []
        self.segments.append(path)
        return path
