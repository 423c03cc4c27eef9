"""The web app in a real browser: Debian's chromium, headless, driven by Playwright, with chromium's fake devices
as the webcam (a y4m of the demo face) and the microphone (a wav).

Skipped, with the reason, when no chromium is found (`apt-get install chromium`; `$PCAVS_CHROMIUM` names
another binary). Screenshots go to `test-artefacts/browser/` (or `$PCAVS_ARTEFACTS/browser/`).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason='the web app needs Gradio: pip install "pcavs[serve]"')
pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright: pip install playwright")
pytest.importorskip("aiortc", reason='Live needs aiortc: pip install "pcavs[serve]"')

from pcavs.core.assets import DEMO_FACE  # noqa: E402
from pcavs.media.probe import probe  # noqa: E402
from pcavs.media.video import iter_frames  # noqa: E402
from support.kits import INPUTS, ROOT  # noqa: E402
from support.web import (CHROMIUM, SHOWN, chromium, click_track, fake_devices, grey_photo, launched, make_video,  # noqa: E402
                         record_live, short_speech)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium found (apt-get install chromium, or set $PCAVS_CHROMIUM)")
ARTEFACTS = Path(os.environ.get("PCAVS_ARTEFACTS", ROOT / "test-artefacts")) / "browser"


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    """The fake webcam (the demo face, still) and microphone (a click every 1.5 s, looped by chromium: on this CPU a
    click is answered by a few frames, all made before the next click)."""
    folder = tmp_path_factory.mktemp("devices")
    return fake_devices(folder, DEMO_FACE, click_track(folder, every=1.5))


@pytest.fixture(scope="module")
def server(synth_weights):
    with launched(synth_weights) as served:
        yield served


@pytest.fixture(scope="module")
def browser(devices):
    with chromium(*devices) as browser:
        yield browser


@pytest.fixture
def page(browser, server):
    context = browser.new_context(permissions=["camera", "microphone"], accept_downloads=True,
                                  viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.errors = []
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(server.url)
    page.wait_for_selector("#go")
    yield page
    context.close()


def artefact(name: str) -> Path:
    """Where the screenshot `name` goes (test-artefacts/browser/NAME.png)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return ARTEFACTS / f"{name}.png"


def shot(page, name: str) -> None:
    page.screenshot(path=str(artefact(name)), full_page=True)


def elapsed(page) -> float:
    return page.evaluate("() => performance.now()") / 1000


def upload(page, face: Path, voice: Path) -> None:
    page.set_input_files("#face input[type=file]", str(face))
    page.set_input_files("#voice input[type=file]", str(voice))
    page.wait_for_selector("#face img[src]")
    page.wait_for_selector("#voice button[aria-label='Play']")


def test_frames_on_screen_while_made_then_the_mp4(page, tmp_path):
    voice = short_speech(tmp_path, 3.2, source="speech.wav")
    times = make_video(page, DEMO_FACE, voice)
    shot(page, "done")
    assert not times["mp4_before_first"], "the first frame came only with the mp4"
    assert times["shown"] >= 80 / 2, f"only {times['shown']} of 80 frames were on screen while the job ran"
    link = page.locator("#final a[download]")
    with page.expect_download() as download:
        link.click()
    out = tmp_path / download.value.suggested_filename
    download.value.save_as(out)
    info = probe(out)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 512, 512)
    assert sum(1 for _ in iter_frames(out)) == 80
    assert page.errors == [], page.errors
    print(f"\n3.2 s voice: first frame on screen after {times['first']:.1f} s, mp4 after {times['mp4']:.1f} s, "
          f"{times['shown']} frames shown while made")


def test_the_button_is_busy_and_the_page_shows_the_frames(page, tmp_path):
    upload(page, DEMO_FACE, short_speech(tmp_path, 1.0, source="speech.wav"))
    page.click("#go")
    page.wait_for_selector("#go:has-text('Making')")
    page.wait_for_function(f"{SHOWN} > 0", timeout=240_000)
    shot(page, "making")
    page.locator("#final a[download]").wait_for(timeout=300_000)
    page.wait_for_selector("#go:has-text('Make the video')")
    assert page.errors == [], page.errors


def test_stop_cancels_the_job_and_leaves_no_folder(page, server, tmp_path):
    before = set(server.workspace.folders())
    upload(page, DEMO_FACE, short_speech(tmp_path, 3.2, source="speech.wav"))
    page.click("#go")
    page.wait_for_selector("#stop", state="visible")
    page.wait_for_function("() => window.pcavsPlayer && window.pcavsPlayer.status", timeout=120_000)
    page.click("#stop")
    page.wait_for_selector("#go:not([disabled])")
    page.wait_for_function("() => window.pcavsPlayer.ended", timeout=120_000)
    assert page.locator("#final a[download]").count() == 0
    deadline = elapsed(page) + 60
    while set(server.workspace.folders()) - before and elapsed(page) < deadline:
        page.wait_for_timeout(200)
    assert not set(server.workspace.folders()) - before, "the stopped job's folder is still there"
    assert server.server.queue.counts() == (0, 0), "the stopped job still holds its place"
    assert page.errors == [], page.errors


def test_a_bad_photo_gets_pcavs_own_line_with_the_users_file_name(page, tmp_path):
    text = tmp_path / "holiday.jpg"
    text.write_text("this is not a picture")
    page.set_input_files("#face input[type=file]", str(text))
    page.set_input_files("#voice input[type=file]", str(short_speech(tmp_path, 0.5)))
    page.wait_for_selector("#voice button[aria-label='Play']")
    page.click("#go")
    error = page.locator(".toast-body", has_text="not an image pcavs can read")
    error.wait_for(timeout=60_000)
    line = error.inner_text().strip()
    assert "holiday.jpg" in line and "/tmp" not in line and "gradio" not in line.lower(), line
    shot(page, "bad-photo")
    page.set_input_files("#face input[type=file]", str(grey_photo(tmp_path)))
    page.wait_for_selector("#face img[src]")
    page.click("#go")
    page.locator(".toast-body", has_text="no face found").wait_for(timeout=120_000)


def test_faster_than_real_time_the_video_plays_at_25_fps_with_its_sound(browser, synth_weights, monkeypatch, tmp_path):
    """As on a GPU (networks of 5 ms a frame, see `timed_stand_in`): the page plays the frames against the voice."""
    from support.generators import timed_stand_in

    timed_stand_in(monkeypatch, 0.005)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    try:
        with launched(synth_weights) as served:
            page.goto(served.url)
            make_video(page, DEMO_FACE, short_speech(tmp_path, 4.0, source="speech.wav"), "crop")
            page.wait_for_function("() => window.pcavsPlayer.sound && window.pcavsPlayer.sound.ended", timeout=60_000)
            player = page.evaluate("() => { const p = window.pcavsPlayer; return {playing: p.playing, stalls: p.stalls, "
                                   "shown: p.shown, received: p.received, played: p.sound.currentTime}; }")
    finally:
        context.close()
    assert player["playing"] and player["stalls"] == 0, player
    assert player["received"] == 100 and player["shown"] >= 95, player  # (nearly) every frame of 4 s drawn in its turn
    assert player["played"] >= 3.9, player  # the voice played to its end
    assert errors == [], errors


def test_live_over_webrtc_with_the_stand_in_generator(browser, synth_weights, monkeypatch):
    """25 frames a second, as a GPU makes them: networks that take 5 ms a frame (see `timed_stand_in`)."""
    from support.generators import timed_stand_in

    timed_stand_in(monkeypatch, 0.005)
    with launched(synth_weights, live_dtype="float32") as served:
        figures = live(browser, served, "live-stand-in", seconds=16)  # at least 10 s, and 10 clicks
    assert figures["shown_fps"] >= 22.5 and figures["made_fps"] >= 22.5, figures  # 25 fps, within 10 %
    assert figures["dropped"] <= 0.01 * (figures["made"] + figures["dropped"]), figures
    assert len(figures["latencies"]) >= 10 and figures["p95"] <= 0.25, figures
    # each sound's frame is shown and timed (but one heard before the face came, one whose frame is on its way)
    assert len(figures["latencies"]) >= figures["sounds"] - 2, figures


def test_live_over_webrtc_on_this_cpu(browser, server):
    """This machine's own networks, slower than real time."""
    live(browser, server, "live-first", seconds=2)  # the first recording after the start pays for Live's warm-up
    figures = live(browser, server, "live", seconds=9)
    assert figures["made"] >= 2, figures
    assert figures["shown"] >= figures["made"] - 1, figures  # every frame made is shown: fps shown = fps made
    # each sound's frame is shown and timed (but one heard before the face came, one whose frame is on its way)
    assert len(figures["latencies"]) >= max(4, figures["sounds"] - 2), figures
    assert figures["median"] <= figures["work"] + 0.08 + 0.15, figures  # one frame's work, the lookahead, 150 ms


def live(browser, served, name: str, seconds: float) -> dict:
    """Record for `seconds` on the Live tab; the page's figures (fps, latency sound to face) and the server's."""
    context = browser.new_context(permissions=["camera", "microphone"], viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    try:
        page.goto(served.url)
        result = record_live(page, seconds, artefact(name))
    finally:
        context.close()
    assert errors == [], errors
    print(f"\n{name}: {result['made']} frames made, {result['shown_fps']:.1f} fps shown, {result['made_fps']:.1f} made, "
          f"{result['dropped']} dropped, latency median {result['median']} s, p95 {result['p95']} s, a frame's work "
          f"{result['work']:.3f} s; {result['sounds']} sounds heard, {result['lit']} lit frames shown, "
          f"{len(result['latencies'])} timed")
    return result
