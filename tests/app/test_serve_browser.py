"""The web app in a real browser: Debian's chromium, headless, driven by Playwright, with chromium's fake devices
as the webcam (a y4m of the demo face) and the microphone (a wav of speech).

Skipped, with the reason, when no chromium is found (`apt-get install chromium`; `$PCAVS_CHROMIUM` names
another binary). Screenshots go to `test-artefacts/browser/` (or `$PCAVS_ARTEFACTS/browser/`).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason='the web app needs Gradio: pip install "pcavs[serve]"')
pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright: pip install playwright")

from pcavs.app.serve import H264_MSE  # noqa: E402
from pcavs.core.assets import DEMO_FACE  # noqa: E402
from pcavs.media.probe import probe  # noqa: E402
from pcavs.media.video import iter_frames  # noqa: E402
from support.kits import INPUTS, ROOT  # noqa: E402
from support.web import COUNT_FRAMES, CHROMIUM, PLAYING, chromium, fake_devices, grey_photo, launched, short_speech  # noqa: E402

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium found (apt-get install chromium, or set $PCAVS_CHROMIUM)")
ARTEFACTS = Path(os.environ.get("PCAVS_ARTEFACTS", ROOT / "test-artefacts")) / "browser"


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    """The fake webcam (the demo face, still) and microphone (1.2 s of speech, looped by chromium)."""
    return fake_devices(tmp_path_factory.mktemp("devices"), DEMO_FACE, INPUTS / "speech_short.wav")


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
    page.goto(server.url)
    page.wait_for_selector("#go")
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def elapsed(page) -> float:
    return page.evaluate("() => performance.now()") / 1000


def make_and_download(page, tmp_path, name: str) -> tuple[Path, float, float]:
    """Click "Make the video", see it play while the job runs, download the mp4: (mp4, s to play, s to the mp4)."""
    start = elapsed(page)
    page.click("#go")
    page.wait_for_function(PLAYING, timeout=240_000)
    playing = elapsed(page) - start
    assert page.locator("#final a[download]").count() == 0, "the video played only once the mp4 was done"
    shot(page, f"{name}-playing")
    link = page.locator("#final a[download]")
    link.wait_for(timeout=240_000)
    finished = elapsed(page) - start
    with page.expect_download() as download:
        link.click()
    out = tmp_path / download.value.suggested_filename
    download.value.save_as(out)
    shot(page, f"{name}-done")
    return out, playing, finished


def test_upload_photo_and_voice_plays_while_made_then_downloads(page, tmp_path):
    assert page.evaluate(f"() => MediaSource.isTypeSupported('{H264_MSE}')"), "this chromium plays no H.264 in MSE"
    # 3.2 s: four 1 s segments, so the first plays while three are still made (with two, a busy 2-core machine could
    # finish the mp4 before the browser had started playing the first)
    voice = short_speech(tmp_path, 3.2, source="speech.wav")
    page.set_input_files("#face input[type=file]", str(grey_photo(tmp_path)))
    page.set_input_files("#voice input[type=file]", str(voice))
    page.wait_for_selector("#face img[src]")
    page.wait_for_selector("#voice button[aria-label='Play']")
    page.click("#go")  # a photo without a face: a one-line error in the page
    error = page.locator(".toast-body", has_text="no face found")
    error.wait_for(timeout=120_000)
    assert "\n" not in error.inner_text().strip().split("no face found")[1]
    shot(page, "upload-error")
    page.click("#face button[aria-label='Remove Image']")
    page.set_input_files("#face input[type=file]", str(DEMO_FACE))
    page.wait_for_selector("#face img[src]")
    out, playing, finished = make_and_download(page, tmp_path, "upload")
    assert out.name == "talking_face.mp4"
    info = probe(out)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 512, 512)
    assert sum(1 for _ in iter_frames(out)) == 80
    print(f"\nupload, 3.2 s voice: plays after {playing:.1f} s, mp4 after {finished:.1f} s")


def test_webcam_photo_and_head_motion_microphone_voice_with_the_score(page, tmp_path, syncnet_file, monkeypatch):
    monkeypatch.setenv("PCAVS_SYNCNET", str(syncnet_file))
    page.click("#face button[aria-label='Capture from camera']")
    page.click("#face button:has-text('Click to Access Webcam')")
    page.wait_for_function("() => { const v = document.querySelector('#face video');"
                           " return !!v && v.videoWidth > 0 && v.currentTime > 0.3; }")
    page.click("#face button[aria-label='capture photo']")
    page.wait_for_function("() => { const i = document.querySelector('#face img'); return !!i && i.naturalWidth > 0; }")
    page.click("#voice button[aria-label='Record audio']")
    page.click("#voice button:has-text('Record')")
    page.wait_for_timeout(3000)  # three 1 s segments or more: the first plays while the others are made
    page.click("#voice button:has-text('Stop') >> visible=true")
    page.wait_for_selector("#voice button[aria-label='Play']")
    page.click("#pose_choice label:has-text('webcam')")  # the head motion from the webcam too
    page.click("#pose_video button:has-text('Click to Access Webcam')")
    page.click("#pose_video button[aria-label='start recording']")
    page.wait_for_timeout(1500)
    page.click("#pose_video button:has-text('Stop')")
    page.wait_for_function("() => { const v = document.querySelector('#pose_video video'); return !!v && v.duration > 0.5; }")
    page.click("#score input")
    page.click("button:has-text('Options')")  # crop mode: SyncNet scores the 224x224 faces as they are
    page.click("#option_mode input")
    page.click("[role=listbox] [role=option]:has-text('crop')")
    shot(page, "devices-ready")
    out, playing, finished = make_and_download(page, tmp_path, "devices")
    frames = sum(1 for _ in iter_frames(out))
    assert 60 <= frames <= 110, frames  # about 3 s of recording
    assert (probe(out).width, probe(out).height) == (224, 224)
    page.wait_for_selector("#scores:has-text('LSE-D')", timeout=120_000)
    print(f"\nwebcam + microphone: plays after {playing:.1f} s, mp4 after {finished:.1f} s ({frames} frames)")


def test_live_five_seconds(page):
    page.get_by_role("tab", name="Live").click()
    page.wait_for_selector("#mic button:has-text('Record')")
    page.click("#mic button:has-text('Record')")
    page.wait_for_selector("#live_face img[src^='data:image/jpeg']", timeout=120_000)
    page.evaluate(COUNT_FRAMES)
    page.wait_for_timeout(5000)
    shot(page, "live")
    figures = page.inner_text("#live_stats")
    frames = page.evaluate("() => window.framesBack")
    page.click("#mic button:has-text('Stop') >> visible=true")
    assert "latency" in figures and "fps" in figures, figures
    assert frames >= 2, f"{frames} frames came back in 5 s"
    print(f"\nlive: {frames} frames back in 5 s; {figures}")
