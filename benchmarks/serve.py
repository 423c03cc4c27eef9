"""The web app as a user meets it: `pcavs.serve()` on loopback, headless chromium (Debian's, with a fake webcam and
a microphone of clicks), a photo and voices of `--seconds` uploaded in "Make a video", then `--live` seconds in
"Live" over WebRTC, on this machine's generator and on a stand-in that takes 5 ms a frame (what a GPU sees).

    python benchmarks/serve.py [--seconds 3 10] [--live 10] [--mode full] [--device auto] [--checkpoints DIR]

Prints, measured in the page: the time from the click to the first frame on screen and to the mp4; in Live,
the latency from a click in the microphone to its frame on screen (median and p95), the frame rates shown and
made, and the frames dropped. Without --checkpoints the weights are synthesized (the faces are noise; the
timings are real).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.generators import timed_stand_in  # noqa: E402
from support.kits import INPUTS  # noqa: E402
from support.web import CHROMIUM, chromium, click_track, fake_devices, free_port, make_video, record_live  # noqa: E402


def voice_of(seconds: float, path: Path) -> Path:
    """The kit's speech, repeated to `seconds`."""
    speech, rate = sf.read(INPUTS / "speech.wav", dtype="float32")
    sf.write(path, np.resize(speech, round(seconds * rate)), rate)
    return path


def live(browser, url: str, seconds: float, name: str) -> None:
    context = browser.new_context(permissions=["camera", "microphone"], viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(url)
    f = record_live(page, seconds)
    context.close()
    latency = "none timed" if f["median"] is None else f"median {f['median']:.3f} s, p95 {f['p95']:.3f} s"
    print(f"live, {name} ({seconds:g} s): latency sound to face {latency} ({len(f['latencies'])} clicks); "
          f"{f['shown_fps']:.1f} fps shown, {f['made_fps']:.1f} fps made, {f['made']} made, {f['dropped']} dropped; "
          f"the server's own latency (a frame's audio in to the frame made) {f['server_latency']:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 10.0], help="the voices' lengths")
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
        with chromium(*fake_devices(folder, DEMO_FACE, click_track(folder, every=1.5))) as browser:  # one click per 1.5 s: no frame is paired with the wrong click
            start = time.perf_counter()
            served = pcavs.serve(port=free_port(), checkpoints=checkpoints, device=args.device, block=False)
            print(f"server up in {time.perf_counter() - start:.1f} s")
            try:
                for seconds in args.seconds:
                    context = browser.new_context(viewport={"width": 1280, "height": 1000})
                    page = context.new_page()
                    page.goto(served.url)
                    t = make_video(page, DEMO_FACE, voice_of(seconds, folder / f"voice{seconds:g}.wav"),
                                   None if args.mode == "full" else args.mode, 3600)
                    context.close()
                    print(f"make a video ({seconds:g} s voice, {args.mode} mode): first frame on screen after "
                          f"{t['first']:.1f} s, mp4 after {t['mp4']:.1f} s, {t['shown']} frames shown while made")
                live(browser, served.url, args.live, "this machine's generator")
            finally:
                served.close()
            with pytest.MonkeyPatch.context() as patch:
                timed_stand_in(patch, 0.005)
                served = pcavs.serve(port=free_port(), checkpoints=checkpoints, device=args.device, block=False,
                                     live_dtype="float32")
                try:
                    live(browser, served.url, args.live, "a stand-in generator of 5 ms a frame")
                finally:
                    served.close()


if __name__ == "__main__":
    main()
