"""The web app launched inside a test, on loopback, and small inputs for it."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import soundfile as sf

from support.kits import INPUTS

IDENTITY = INPUTS / "identity" / "000000.png"  # an aligned 224x224 face: with aligned=yes no detection runs
GOOD = {"aligned": "yes", "mode": "crop"}
RATE = 16000  # Hz of the voices made here
# Debian's chromium (apt-get install chromium), or the binary $PCAVS_CHROMIUM names
CHROMIUM = os.environ.get("PCAVS_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
SHOWN = "() => window.pcavsPlayer ? window.pcavsPlayer.shown : 0"  # frames the player has drawn
LIVE_FIGURES = """() => { const l = window.pcavsLive; const s = [...l.latencies].sort((a, b) => a - b);
    return {made: l.figures.made, dropped: l.figures.dropped, made_fps: l.figures.made_fps, shown_fps: l.shownFps,
            server_latency: l.figures.latency, work: l.figures.work, sounds: l.sounds, lit: l.lit, status: l.figures.status,
            latencies: s, median: s[Math.floor(s.length / 2)] ?? null,
            p95: s[Math.min(s.length - 1, Math.floor(0.95 * s.length))] ?? null, shown: l.shown}; }"""


def now(page) -> float:
    return page.evaluate("() => performance.now()") / 1000


def make_video(page, face: Path, voice: Path, mode: str | None = None, timeout: float = 600) -> dict:
    """Upload `face` and `voice` in "Make a video", click, and wait for the download link: the seconds from the click
    to the first frame on screen and to the mp4, and the frames shown while the job ran."""
    page.set_input_files("#face input[type=file]", str(face))
    page.set_input_files("#voice input[type=file]", str(voice))
    page.wait_for_selector("#face img[src]")
    page.wait_for_selector("#voice button[aria-label='Play']")
    if mode is not None:
        page.click("button:has-text('Options')")
        page.click("#option_mode input")
        page.click(f"[role=listbox] [role=option]:has-text('{mode}')")
    start = now(page)
    page.click("#go")
    page.wait_for_function(f"{SHOWN} > 0", timeout=timeout * 1000, polling=50)
    first = now(page) - start
    mp4_before_first = page.locator("#final a[download]").count() > 0
    page.locator("#final a[download]").wait_for(timeout=timeout * 1000)
    return {"first": first, "mp4": now(page) - start, "shown": page.evaluate(SHOWN), "mp4_before_first": mp4_before_first}


def record_live(page, seconds: float, screenshot: Path | None = None) -> dict:
    """Record `seconds` on the Live tab: the page's figures (fps shown and made, dropped, latency sound to face); the
    page is saved in `screenshot` while it still records."""
    page.get_by_role("tab", name="Live").click()
    page.click("#live_record")
    page.wait_for_function("() => window.pcavsLive.shown > 0", timeout=600_000)
    page.wait_for_timeout(seconds * 1000)
    figures = page.evaluate(LIVE_FIGURES)
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.click("#live_stop")
    return figures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def launched(checkpoints: Path, **options) -> Iterator:
    """`pcavs.serve(...)` on 127.0.0.1 and a free port, without blocking; closed (folders removed) afterwards."""
    import pcavs

    served = pcavs.serve(port=free_port(), checkpoints=checkpoints, device="cpu", block=False, **options)
    try:
        yield served
    finally:
        served.close()


def short_speech(folder: Path, seconds: float, name: str = "voice.wav", source: str = "speech_short.wav") -> Path:
    """The first `seconds` of the kit's speech (`source`: its 1.28 s clip, or "speech.wav", 6.4 s) as a 16 kHz wav."""
    data, rate = sf.read(INPUTS / source, dtype="float32")
    assert len(data) >= seconds * rate, f"{source} is shorter than {seconds} s"
    path = folder / name
    sf.write(path, data[: round(seconds * rate)], rate)
    return path


def grey_photo(folder: Path) -> Path:
    """A photo with no face in it."""
    import cv2

    path = folder / "wall.png"
    cv2.imwrite(str(path), np.full((240, 320, 3), 128, np.uint8))
    return path


@contextlib.contextmanager
def chromium(camera: Path, microphone: Path) -> Iterator:
    """Headless chromium (Playwright) whose webcam plays `camera` (a y4m) and whose microphone plays `microphone` (a
    wav), both looped, with the permission to use them granted."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}", f"--use-file-for-fake-audio-capture={microphone}"])
        try:
            yield browser
        finally:
            browser.close()


def fake_devices(folder: Path, face: Path, speech: Path) -> tuple[Path, Path]:
    """A webcam file showing `face` (still, 640x480) and a microphone file playing `speech` (48 kHz)."""
    from support.av import ffmpeg

    camera, microphone = folder / "camera.y4m", folder / "microphone.wav"
    ffmpeg("-loop", "1", "-i", str(face), "-t", "2", "-r", "10", "-vf", "scale=640:480,format=yuv420p", str(camera))
    ffmpeg("-i", str(speech), "-ar", "48000", "-ac", "1", "-c:a", "pcm_s16le", str(microphone))
    return camera, microphone


def click_track(folder: Path, seconds: float = 30.0, every: float = 0.5, rate: int = 48000) -> Path:
    """A microphone file of sharp clicks (10 ms, loud) every `every` seconds over silence: each click is a sound whose
    frame Live's probe square lights, so the page can time sound to face."""
    samples = np.zeros(int(seconds * rate), np.float32)
    click = int(0.01 * rate)
    for start in range(int(0.2 * rate), len(samples) - click, int(every * rate)):
        samples[start:start + click] = 0.8 * np.sign(np.sin(np.arange(click) * 2 * np.pi * 1000 / rate) + 1e-9)
    path = folder / "clicks.wav"
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


def post(url: str, voice: Path, face: Path = IDENTITY, transport=None, auth=None, **options) -> httpx.Response:
    """POST /v1/videos with these files (sent under their own names) and options."""
    with httpx.Client(base_url=url, timeout=60, transport=transport, auth=auth) as http, \
            open(face, "rb") as photo, open(voice, "rb") as audio:
        return http.post("v1/videos", files={"face": (face.name, photo), "audio": (voice.name, audio)},
                         data={**GOOD, **options})


def good_job(url: str, voice: Path, folder: Path, auth=None, local_address: str | None = None, timeout: float = 120,
             every: float = 0.05) -> dict:
    """A normal request through the HTTP API (from `local_address`, a loopback address, when given), polled until it
    ends: done, and its mp4 plays."""
    from pcavs.media.probe import probe

    def transport():
        return httpx.HTTPTransport(local_address=local_address) if local_address else None

    answer = post(url, voice, transport=transport(), auth=auth)
    assert answer.status_code == 202, answer.text
    job = answer.json()["id"]
    with httpx.Client(base_url=url, timeout=60, auth=auth, transport=transport()) as http:
        wait_for(lambda: http.get(f"v1/videos/{job}").json()["status"] not in ("queued", "running"), timeout, every)
        status = http.get(f"v1/videos/{job}").json()
        assert status["status"] == "done", status
        content = http.get(f"v1/videos/{job}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    out = folder / f"{job}.mp4"
    out.write_bytes(content.content)
    info = probe(out)
    assert (info.video_codec, info.width, info.height, info.has_audio) == ("h264", 224, 224, True), info
    return status


def refused(what: str, answer: httpx.Response, status: int, *words: str, started: float) -> str:
    """The one-line error of a refused request, with `status` and every one of `words` in it."""
    error = answer.json()["error"]
    print(f"\n{what}: {answer.status_code} {error!r} ({time.perf_counter() - started:.2f} s)")
    assert answer.status_code == status, (what, answer.status_code, error)
    assert "\n" not in error and all(w in error for w in words), (what, error)
    return error


def wait_for(condition, timeout: float = 60, every: float = 0.05) -> None:
    """Poll `condition` each `every` seconds until it holds; fails after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(every)


def lying_wav(path: Path, seconds: float, claimed: float) -> Path:
    """A 16-bit mono wav holding `seconds` of noise whose RIFF and data sizes claim `claimed` seconds."""
    samples = (np.random.default_rng(0).standard_normal(round(seconds * RATE)) * 3000).astype("<i2").tobytes()
    size = round(claimed * RATE) * 2
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + size, b"WAVE", b"fmt ", 16, 1, 1, RATE, 2 * RATE, 2, 16,
                         b"data", size)
    path.write_bytes(header + samples)
    return path


class PeakMemory(threading.Thread):
    """The highest resident memory of this process (the servers of a test run in it) while it runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.running = True

    def run(self) -> None:
        import psutil

        process = psutil.Process()
        while self.running:
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(0.05)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak
