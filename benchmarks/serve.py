"""The web app as a user meets it: `pcavs.serve()` on loopback, headless chromium (Debian's, with a fake webcam and
microphone), a photo and a voice of `--seconds` uploaded in "Make a video", then `--live` seconds in "Live".

    python benchmarks/serve.py [--seconds 10] [--live 10] [--mode full] [--device auto] [--checkpoints DIR]

Prints, measured in the page: the time from the click until the video starts playing and until the mp4 can be
downloaded; in Live, the latency and frame rates the page shows, the frames that came back and the frames
dropped. Without --checkpoints the weights are synthesized (the faces are noise; the timings are real).
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.kits import INPUTS  # noqa: E402
from support.web import COUNT_FRAMES, CHROMIUM, PLAYING, chromium, fake_devices, free_port  # noqa: E402



def voice_of(seconds: float, path: Path) -> Path:
    """The kit's speech, repeated to `seconds`."""
    speech, rate = sf.read(INPUTS / "speech.wav", dtype="float32")
    sf.write(path, np.resize(speech, round(seconds * rate)), rate)
    return path


def make_a_video(page, face: Path, voice: Path, mode: str) -> tuple[float, float]:
    """(s from the click until the video plays, s until the mp4 can be downloaded)."""
    page.set_input_files("#face input[type=file]", str(face))
    page.set_input_files("#voice input[type=file]", str(voice))
    page.wait_for_selector("#face img[src]")
    page.wait_for_selector("#voice button[aria-label='Play']")
    if mode != "full":
        page.click("button:has-text('Options')")
        page.click("#option_mode input")
        page.click(f"[role=listbox] [role=option]:has-text('{mode}')")
    now = "() => performance.now() / 1000"
    start = page.evaluate(now)
    page.click("#go")
    page.wait_for_function(PLAYING, timeout=3_600_000, polling=100)
    playing = page.evaluate(now) - start
    page.wait_for_selector("#final a[download]", timeout=3_600_000)
    return playing, page.evaluate(now) - start


def live(page, seconds: float) -> dict:
    """Record `seconds` in Live: the figures the page shows, once a second, and the frames that came back."""
    page.get_by_role("tab", name="Live").click()
    page.click("#mic button:has-text('Record')")
    page.wait_for_selector("#live_face img[src^='data:image/jpeg']", timeout=600_000)
    page.evaluate(COUNT_FRAMES)
    shown = []
    for _ in range(round(seconds)):
        page.wait_for_timeout(1000)
        shown.append(page.inner_text("#live_stats"))
    frames = page.evaluate("() => window.framesBack")
    page.click("#mic button:has-text('Stop') >> visible=true")
    number = lambda pattern, text: float(m[1]) if (m := re.search(pattern, text)) else 0.0  # noqa: E731
    return {
        "latency": statistics.median(number(r"latency ([\d.]+) s", t) for t in shown),
        "shown fps": statistics.median(number(r"([\d.]+) fps shown", t) for t in shown),
        "made fps": statistics.median(number(r"\(([\d.]+) fps made", t) for t in shown),
        "dropped": int(number(r"(\d+) frames dropped", shown[-1])),
        "frames back": frames, "last": re.sub(r"^[\d.]+s\s*", "", shown[-1]).replace("\n\n", " "),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="the voice's length")
    parser.add_argument("--live", type=float, default=10.0, help="seconds to record in Live")
    parser.add_argument("--mode", default="full", choices=("full", "crop", "grid"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoints", help="real weights (default: synthesized)")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("no chromium found: apt-get install chromium (or set $PCAVS_CHROMIUM)")
    import pcavs
    from pcavs.core.assets import DEMO_FACE

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoints = args.checkpoints
        if checkpoints is None:
            from support.pcavs_weights import write_checkpoints

            checkpoints = write_checkpoints(folder / "weights")
        start = time.perf_counter()
        served = pcavs.serve(port=free_port(), checkpoints=checkpoints, device=args.device, block=False)
        print(f"server up in {time.perf_counter() - start:.1f} s on {', '.join(str(p.device) for p in served.jobs.pipelines)}")
        try:
            with chromium(*fake_devices(folder, DEMO_FACE, INPUTS / "speech.wav")) as browser:
                context = browser.new_context(permissions=["camera", "microphone"], viewport={"width": 1280, "height": 1000})
                page = context.new_page()
                page.goto(served.url)
                playing, finished = make_a_video(page, DEMO_FACE, voice_of(args.seconds, folder / "voice.wav"), args.mode)
                print(f"make a video ({args.seconds:g} s voice, {args.mode} mode): plays after {playing:.1f} s, "
                      f"mp4 after {finished:.1f} s ({playing / finished:.0%} of the wait)")
                figures = live(page, args.live)
                print(f"live ({args.live:g} s): median latency {figures['latency']:.2f} s, {figures['shown fps']:.1f} fps "
                      f"shown, {figures['made fps']:.1f} fps made, {figures['frames back']} frames back, "
                      f"{figures['dropped']} dropped; last: {figures['last']}")
        finally:
            served.close()


if __name__ == "__main__":
    main()
