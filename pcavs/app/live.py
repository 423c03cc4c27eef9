"""Live over WebRTC (aiortc): the browser's microphone in as an audio track, the prepared avatar's talking face out
as a video track, each frame sent as soon as it is made and shown by the browser as soon as it comes (the
playout-delay extension at 0).

`POST /live/offer` takes the browser's SDP offer and answers. A recording takes its place in the server's
one queue like a video job, then runs the backend's `live` (`Pipeline.stream(avatar, chunks, realtime=True)`,
here or on a Ray Serve replica) on that slot's thread: when making frames is slower than real time, frames are
dropped to stay in sync with the voice. WebRTC always ends in this process.

With `probe`, a small square in the bottom-right corner of a frame is white when a loud sound began in the voice
since the frame made before it (in its own 40 ms, or those of the frames real time dropped): a page can time a
sound in its microphone to the first frame on screen that answers it (end to end). A sound lights one frame,
however many frames' audio it lasts.

Chromium names its own addresses with mDNS (`….local`) in the offer; the server needs none of them: the
browser's connectivity checks reach the server's own candidates, and aiortc answers from the address they
came from. A browser that cannot reach the server's addresses (another network, NAT) needs a TURN server:
`pcavs serve --ice-server turn:…`.
"""
from __future__ import annotations

import asyncio
import collections
import fractions
import functools
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..core.errors import InputError, PcavsError, one_line
from ..media.audio import SPEECH_RATE
from .jobs import Cancelled, LiveFrame, Queue, Ticket, run_on
from .limits import Limits

VIDEO_CLOCK = 90000  # Hz, RTP's video clock
SAMPLES_PER_FRAME = SPEECH_RATE // 25
PROBE_SIDE = 16  # pixels of the probe square
PROBE_LOUD = 0.25  # a sound begins where a frame's samples reach this peak after a frame's that did not
RATE_WINDOW = 5.0  # s over which the frame rate made is measured
IDLE = 5.0  # s without audio: the recording has ended
PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"  # RTP header extension (libwebrtc's)
# the backend's `live`: (pipeline, photo, 16 kHz chunks) -> the frames, on the slot's thread
Live = Callable[[Any, Path, Iterator[np.ndarray]], Iterator[LiveFrame]]


@dataclass
class Figures:
    """What the page shows about a recording, as the server sees it."""

    status: str = "waiting"  # waiting, live, ended, failed
    position: int | None = None
    made: int = 0
    dropped: int = 0
    made_fps: float = 0.0
    latency: float = 0.0  # s from the end of a frame's audio reaching the server to the frame being made
    work: float = 0.0  # s the device takes to make a frame (one batch's work): the median over RATE_WINDOW
    error: str | None = None
    _times: collections.deque = field(default_factory=collections.deque)  # (when, work) of the frames made lately

    def tick(self, work: float) -> None:
        """A frame was made, in `work` seconds of the device's."""
        now = time.monotonic()
        self._times.append((now, work))
        while now - self._times[0][0] > RATE_WINDOW:
            self._times.popleft()
        span = now - self._times[0][0]
        self.made_fps = (len(self._times) - 1) / span if span > 0 else 0.0
        self.work = float(np.median([w for _, w in self._times]))

    def public(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(self).items() if not k.startswith("_")}


def probe_mark(image: np.ndarray, loud: bool) -> np.ndarray:
    """The frame with the probe square lit (white) or dark (black)."""
    marked = image.copy()
    marked[-PROBE_SIDE:, -PROBE_SIDE:] = 255 if loud else 0
    return marked


class LiveSession:
    """One recording: audio frames in from aiortc's loop, frames made on a device thread, frames out to the track."""

    def __init__(self, client: str, ticket: Ticket, queue_: Queue, limits: Limits, live: Live, photo: Path,
                 probe: bool, loop: asyncio.AbstractEventLoop):
        self.id = secrets.token_urlsafe(12)
        self.client = client
        self.ticket = ticket
        self.queue = queue_
        self.limits = limits
        self.live = live
        self.photo = photo
        self.probe = probe
        self.loop = loop
        self.figures = Figures()
        self.frames: asyncio.Queue = asyncio.Queue()
        self._chunks: queue.SimpleQueue = queue.SimpleQueue()
        self._onsets: list[bool] = []  # per output frame: whether a sound begins in its own samples (the probe)
        self._loud = False  # the last frame's samples were loud
        self._pending = np.zeros(0, np.float32)
        self._resampler = None
        self.peer = None  # the RTCPeerConnection, once answered
        self.thread = threading.Thread(target=self._run, name=f"pcavs-live-{self.id[:6]}", daemon=True)

    # ---------------------------------------------------------------- audio in (the event loop)

    def hear(self, frame) -> None:
        """An audio frame from the browser: checked, made mono 16 kHz, queued for the stream."""
        import av

        Limits.live_chunk(frame.sample_rate, frame.samples)
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SPEECH_RATE)
        for out in self._resampler.resample(frame):
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            self._chunks.put(samples)
            self._measure(samples)

    def end(self) -> None:
        """No more audio: the stream makes the frames of what it has, then ends."""
        self._chunks.put(None)
        if self.figures.status == "waiting":
            self.ticket.stop.set()

    def _measure(self, samples: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, samples])
        whole = len(self._pending) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME
        for block in self._pending[:whole].reshape(-1, SAMPLES_PER_FRAME):
            loud = float(np.abs(block).max()) >= PROBE_LOUD
            self._onsets.append(loud and not self._loud)
            self._loud = loud
        self._pending = self._pending[whole:]

    # ---------------------------------------------------------------- frames (a device thread)

    def start(self) -> None:
        self.thread.start()

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
        deadline = time.monotonic() + self.limits.job_timeout
        try:
            while self.ticket.slot is None:
                self.figures.position = self.queue.position(self.ticket)
                slot = None
                try:
                    slot = self.queue.wait(self.ticket, min(deadline, time.monotonic() + 0.5))
                except Cancelled:
                    if self.ticket.stop.is_set() or time.monotonic() > deadline:
                        raise
                if slot is not None:
                    break
            self._drain()  # the audio that came while waiting is the past: start from now
            self.figures.status, self.figures.position = "live", None

            timer = threading.Timer(max(0.0, deadline - time.monotonic()), self.ticket.stop.set)
            timer.start()
            shown = -1
            try:
                frames = run_on(self.ticket.slot, lambda pipeline: self.live(pipeline, self.photo, self._audio()),
                                self.ticket.stop)
                for index, image, latency, dropped, work in frames:
                    if self.probe:  # lit when a sound began since the last frame made (dropped frames' audio included)
                        image = probe_mark(image, any(self._onsets[shown + 1:index + 1]))
                        shown = index
                    self.figures.made += 1
                    self.figures.tick(work)
                    self.figures.latency, self.figures.dropped = latency, dropped
                    self._send((index, image))
            finally:
                timer.cancel()
            self.figures.status = "ended"
        except Cancelled:
            self.figures.status = "ended"
        except PcavsError as exc:
            self.figures.status, self.figures.error = "failed", one_line(exc)
        except Exception as exc:  # noqa: BLE001 - shown in the page; the server goes on
            self.figures.status, self.figures.error = "failed", f"internal error: {type(exc).__name__}: {one_line(exc)}"
        finally:
            self.queue.leave(self.ticket)
            self._send(None)

    def _send(self, item) -> None:
        """Hand `item` (a frame, or None at the end) to the video track, on the event loop (gone once the server stops)."""
        try:
            self.loop.call_soon_threadsafe(self.frames.put_nowait, item)
        except RuntimeError:  # the server's loop has closed: nobody is watching
            self.ticket.stop.set()

    def _drain(self) -> None:
        skipped = 0
        while True:
            try:
                chunk = self._chunks.get_nowait()
            except queue.Empty:
                break
            if chunk is None:
                self._chunks.put(None)
                break
            skipped += len(chunk)
        self._onsets = self._onsets[skipped // SAMPLES_PER_FRAME:]


class Sessions:
    """The live recordings of one server: at most one per client."""

    def __init__(self, queue_: Queue, limits: Limits, ice_servers: list[dict], live: Live):
        self.queue = queue_
        self.limits = limits
        self.ice_servers = ice_servers
        self.live = live
        self._sessions: dict[str, LiveSession] = {}
        self._peers: set = set()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> LiveSession | None:
        with self._lock:
            return self._sessions.get(session_id)

    async def offer(self, client: str, sdp: str, kind: str, photo: Path, probe: bool) -> dict:
        """Answer the browser's offer: a recording is queued, its face track added. InputError when refused."""
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

        if kind != "offer" or not isinstance(sdp, str) or "m=audio" not in sdp:
            raise InputError("offer: send the browser's SDP offer with a microphone (audio) track, as {sdp, type}")
        with self._lock:
            if any(s.client == client and s.figures.status in ("waiting", "live") for s in self._sessions.values()):
                raise InputError("one live recording per client: stop the other one first")
        ticket = self.queue.join(client, "live")
        session = LiveSession(client, ticket, self.queue, self.limits, self.live, photo, probe, asyncio.get_running_loop())
        config = RTCConfiguration([RTCIceServer(s["urls"], s.get("username"), s.get("credential"))
                                   for s in self.ice_servers])
        peer = RTCPeerConnection(config)
        self._peers.add(peer)

        @peer.on("track")
        def on_track(track) -> None:
            if track.kind == "audio":
                for transceiver in peer.getTransceivers():
                    if transceiver.receiver.track is track:
                        _prompt(transceiver.receiver)
                asyncio.ensure_future(self._listen(session, track))

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer.connectionState in ("failed", "closed", "disconnected"):
                session.end()
                await self._close(peer)

        _show_at_once(peer.addTrack(FaceTrack(session)))
        try:
            await peer.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await peer.setLocalDescription(await peer.createAnswer())
        except Exception as exc:  # noqa: BLE001 - a malformed offer: the client's error
            self.queue.leave(ticket)
            await self._close(peer)
            raise InputError(f"offer: not a usable WebRTC offer ({one_line(exc, 120)})") from None
        with self._lock:
            self._sessions[session.id] = session
        session.peer = peer
        session.start()
        return {"sdp": peer.localDescription.sdp, "type": peer.localDescription.type, "session": session.id}

    async def _listen(self, session: LiveSession, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                session.hear(await track.recv())
        except MediaStreamError:
            pass
        except PcavsError as exc:
            session.figures.status, session.figures.error = "failed", one_line(exc)
            session.ticket.stop.set()
        session.end()

    async def stop(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            session.end()
            session.ticket.stop.set()
            await self._close(session.peer)

    async def _close(self, peer) -> None:
        self._peers.discard(peer)
        await peer.close()

    async def close(self) -> None:
        for session_id in list(self._sessions):
            await self.stop(session_id)


def _prompt(receiver) -> None:
    """aiortc holds four audio packets (80 ms) before it decodes one; Live wants the voice as it comes. Each Opus
    packet is a whole frame, so the receiver is given a buffer that hands each packet on at once."""
    if hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
        receiver._RTCRtpReceiver__jitter_buffer = AtOnce()


def _show_at_once(sender) -> None:
    """A browser shows each frame of a video track at the time its RTP timestamp asks for, holding a frame that comes
    early and dropping one that a newer frame overtakes: Live's frames come when they are made (after a quiet pause,
    the frame that answers a sound came late or was never shown). The face track's packets carry the playout-delay
    header extension at 0 (min and max), which asks the browser to show each frame as soon as it is decoded."""
    if hasattr(sender, "_RTCRtpSender__rtp_header_extensions_map"):
        sender._RTCRtpSender__rtp_header_extensions_map = _no_playout_delay_class()()


@functools.cache
def _no_playout_delay_class():
    """aiortc's header-extension map that also writes playout-delay 0, once aiortc agrees to the extension (made
    once: aiortc is optional, and agreeing to the extension changes aiortc's own list)."""
    from aiortc import codecs, rtp
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

    offered = codecs.HEADER_EXTENSIONS["video"]  # what aiortc agrees to: the browser's offer names the extension
    offered.append(RTCRtpHeaderExtensionParameters(id=max(known.id for known in offered) + 1, uri=PLAYOUT_DELAY))

    class NoPlayoutDelay(rtp.HeaderExtensionsMap):
        playout_delay: int | None = None  # the extension's id, once agreed

        def configure(self, parameters) -> None:
            super().configure(parameters)
            self.playout_delay = next((x.id for x in parameters.headerExtensions if x.uri == PLAYOUT_DELAY), None)

        def set(self, values) -> tuple[int, bytes]:
            profile, value = super().set(values)
            if self.playout_delay is None:
                return profile, value
            extensions = rtp.unpack_header_extensions(profile, value) if value else []
            return rtp.pack_header_extensions([*extensions, (self.playout_delay, bytes(3))])  # 0 ms min, 0 ms max

    return NoPlayoutDelay


class AtOnce:
    """aiortc's jitter buffer for an audio receiver, without the wait: each packet becomes a frame as it comes,
    and one that is not newer than the newest so far (late, or twice) is dropped."""

    def __init__(self) -> None:
        self._newest: int | None = None

    def add(self, packet) -> tuple[bool, Any]:
        """(no picture lost, the packet's frame or None): as aiortc's `JitterBuffer.add`."""
        from aiortc.jitterbuffer import JitterFrame

        if self._newest is not None and not 0 < (packet.sequence_number - self._newest) % 65536 < 32768:
            return False, None
        self._newest = packet.sequence_number
        return False, JitterFrame(packet._data, packet.timestamp)


@functools.cache
def _face_track_class():
    from aiortc import MediaStreamTrack

    class Track(MediaStreamTrack):
        kind = "video"

        def __init__(self, session: LiveSession):
            super().__init__()
            self.session = session

        async def recv(self):
            import av
            from aiortc.mediastreams import MediaStreamError

            item = await self.session.frames.get()
            if item is None:
                self.stop()
                raise MediaStreamError
            index, image = item
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index * (VIDEO_CLOCK // 25), fractions.Fraction(1, VIDEO_CLOCK)
            return frame

    return Track


def FaceTrack(session: LiveSession):  # noqa: N802 - builds aiortc's track class on first use (aiortc is optional)
    """The video track of a recording: each frame as soon as it is made."""
    return _face_track_class()(session)
