"""The web page (Gradio 6): "Make a video" (photo, voice and head motion from uploads, the webcam, the microphone or
the demo; the options; the frames on screen as they are made, then the mp4 and the lip-sync scores) and "Live"
(the microphone in, the face out, over WebRTC). `/generate` is the API for `gradio_client`.

Uploads reach the handlers as files, unread: pcavs checks them and its one-line errors name the user's own file
name. A request may use only the files its own client uploaded, and never a URL. The page's JavaScript
(static/page.js) draws the frames from the HTTP API's frame stream and runs Live.
"""
from __future__ import annotations

import html
import inspect
import json
import logging
import os
import time
import traceback
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from ..core.assets import DEMO_AUDIO, DEMO_FACE, DEMO_POSE
from ..core.errors import InputError, PcavsError, one_line
from ..core.options import FRACTIONS, Options
from .api import FORM_OPTIONS, client_of
from .jobs import run_on
from .server import Server

WHOLE_NUMBERS = ("seed", "face_index", "batch_size")
POSE_CHOICES = ("demo", "upload", "webcam", "none")
TELEMETRY = "HF_HUB_DISABLE_TELEMETRY"
WAIT = 0.5  # s between the handler's looks at its job
log = logging.getLogger("pcavs.serve")


def gradio():
    try:
        import gradio
    except ImportError:
        raise PcavsError('the web app needs Gradio 6: pip install "pcavs[serve]"') from None
    if not gradio.__version__.startswith("6."):
        raise PcavsError(f"the web app needs Gradio 6 (found {gradio.__version__}): pip install \"pcavs[serve]\"")
    return gradio


def unread(component):
    """`component` (a Gradio file input) handing its handler (server path, the user's file name), unread; a URL in
    place of an upload is refused before anything is fetched. (Set on the instance: a subclass would make Gradio
    write a .pyi stub beside this module.)"""
    plain_move, plain_async_move = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    def preprocess(payload):
        if payload is None:
            return None
        if isinstance(payload, list):  # gr.File takes lists too; one file is all a role takes
            payload = payload[0] if payload else None
        payload = getattr(payload, "video", None) or payload  # gr.Video wraps its file
        return payload.path, payload.orig_name or payload.path.rsplit("/", 1)[-1]

    def move(url_or_file_path):
        _refuse_url(url_or_file_path)
        return plain_move(url_or_file_path)

    async def async_move(url_or_file_path):
        _refuse_url(url_or_file_path)
        return await plain_async_move(url_or_file_path)

    component.preprocess, component.move_resource_to_block_cache = preprocess, move
    component.async_move_resource_to_block_cache = async_move
    return component


def _refuse_url(url_or_file_path) -> None:
    from gradio_client.utils import is_http_url_like

    if url_or_file_path and is_http_url_like(str(url_or_file_path)):
        raise gradio().Error("a URL in place of a file: upload the file itself", print_exception=False)


class Page:
    """The handlers and the page of one server."""

    def __init__(self, server: Server, warning: str | None = None):
        self.server = server
        self.warning = warning  # shown at the top of the page (a public link without a login)
        self._syncnet = None

    # ------------------------------------------------------------------ handlers

    def errors(self, exc: BaseException):
        """A failure as a one-line error in the page; the server goes on serving."""
        gr = gradio()
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, PcavsError):
            log.warning("request failed: %s", one_line(exc))
            return gr.Error(html.escape(one_line(exc), quote=False), print_exception=False)
        log.error("internal error:\n%s", "".join(traceback.format_exception(exc)))
        return gr.Error(html.escape(f"internal error: {type(exc).__name__}: {one_line(exc)}", quote=False),
                        print_exception=False)

    def owned(self, file, role: str, request) -> tuple[str, str] | None:
        if not file:
            return None
        path, shown = file
        if path not in (str(DEMO_FACE), str(DEMO_AUDIO), str(DEMO_POSE)):
            self.server.uploads.check(path, client_of(request), role, shown)
        return path, shown

    def make_video(self, face, audio, pose_choice, pose_video, score, request, **options) -> Iterator[tuple]:
        """The "Make a video" button: the player at once, then the mp4 and the scores."""
        gr = gradio()
        busy = gr.update(value="Making the video...", interactive=False)
        job = None
        try:
            pose = {"demo": (str(DEMO_POSE), DEMO_POSE.name), "none": None}.get(pose_choice, pose_video)
            if pose_choice in ("upload", "webcam") and not pose_video:
                raise InputError("head motion: upload a video or record one with the webcam (or choose demo or none)")
            if not face:
                raise InputError("photo: upload a photo or take one with the webcam")
            if not audio:
                raise InputError("voice: upload a recording or record one with the microphone")
            files = [self.owned(face, "photo", request), self.owned(audio, "voice", request),
                     self.owned(pose, "head motion", request) if pose_choice in ("upload", "webcam") else pose]
            syncnet = self.syncnet() if score else None  # missing SyncNet weights fail before the job
            job = self.server.submit(client_of(request), *files, options)
            yield (f'<div class="pcavs-player" data-job="{job.id}"></div>', "", "", job.id, busy, gr.update(visible=True))
            while not job.wait(WAIT):
                pass
            if job.status != "done":
                raise InputError(job.error or job.status)
            link = f"v1/videos/{job.id}/content"
            final = (f'<video src="{link}" controls playsinline class="pcavs-final"></video>'
                     f'<p><a href="{link}" download="talking_face.mp4">Download the mp4</a></p>')
            scores = self.scores(job, syncnet, request) if syncnet is not None else ""
            yield gr.skip(), final, scores, job.id, gr.update(value="Make the video", interactive=True), gr.update(visible=False)
        except BaseException as exc:
            if job is not None and not job.ended:
                self.server.videos.cancel(job)
            if isinstance(exc, GeneratorExit):
                raise
            raise self.errors(exc) from None

    def stop(self, job_id: str | None):
        """The Stop button: the job is cancelled, its place and folder freed."""
        gr = gradio()
        job = self.server.videos.get(job_id or "")
        if job is not None:
            self.server.videos.delete(job.id)
        return gr.update(value="Make the video", interactive=True), gr.update(visible=False)

    def generate(self, face, audio, pose=None, request=None, progress=None, **options) -> str:
        """Make a talking-face video: the photo `face`, the speech `audio`, an optional head-motion video `pose`,
        and any option of pcavs.Options by name (mode, noise, seed, pose_loop, enhance, ...). Returns the mp4.
        While it waits, `status().progress_data[0].desc` says how many requests are ahead of it."""
        try:
            job = self.server.submit(client_of(request), self.owned(face, "face", request),
                                     self.owned(audio, "audio", request), self.owned(pose, "pose", request), options)
            while not job.wait(WAIT):
                position = self.server.videos.position(job)
                if position is not None:
                    progress(0, desc=f"waiting for the device: {position} ahead")
                elif job.total:
                    progress((job.frames, job.total), desc="making frames", unit="frames")
                else:
                    progress(0, desc=job.stage)
            if job.status != "done":
                raise InputError(job.error or job.status)
            return str(job.video)
        except BaseException as exc:
            raise self.errors(exc) from None

    def syncnet(self):
        """SyncNet for the lip-sync score, loaded on first use (downloaded then, where it is missing)."""
        from ..metrics.evaluate import resolve_syncnet

        if self._syncnet is None:
            self._syncnet = resolve_syncnet(None, "cpu")
        return self._syncnet

    def scores(self, job, syncnet, request) -> str:
        """The lip-sync scores of the finished video (on a device, in its turn), as Markdown."""
        from ..metrics.evaluate import evaluate

        with self.server.queue.place(client_of(request), "score", time.monotonic() + self.server.limits.job_timeout) as ticket:
            measured = next(run_on(ticket.slot, lambda pipeline: iter([evaluate(job.video, syncnet=syncnet, progress=False)]),
                                   ticket.stop))
        table = measured.summary().split("\n", 1)[1]  # the first row names the server's file
        return f"**Lip-sync score** (SyncNet)\n\n```\n{table}\n```"

    def prepare(self, photo, request=None):
        """The Live tab's photo: its token, and its avatar prepared now (once per device)."""
        try:
            if not photo:
                return "Choose a photo (upload one or take one with the webcam).", ""
            path, shown = self.owned(photo, "photo", request)
            token = self.server.avatars.token(path)
            start = time.monotonic()
            with self.server.queue.place(client_of(request), "avatar", start + self.server.limits.job_timeout) as ticket:
                list(run_on(ticket.slot, lambda pipeline: self.server.backend.live(pipeline, Path(path), iter(())),
                            ticket.stop))
            return f"Avatar of {html.escape(shown)} ready ({time.monotonic() - start:.1f} s): press Record.", token
        except BaseException as exc:
            raise self.errors(exc) from None

    # ------------------------------------------------------------------ the page

    def option_inputs(self, gr) -> dict[str, Any]:
        """One input per form option, from its field in `Options`: a menu, a checkbox, a slider or a text box."""
        inputs = {}
        for spec in fields(Options):
            if spec.name not in FORM_OPTIONS:
                continue
            label, info, choices = spec.name.replace("_", " "), spec.metadata["help"], spec.metadata["choices"]
            look = dict(label=label, info=info, elem_id=f"option_{spec.name}")
            if choices:
                unset = "off" if spec.name == "enhance" else "default"
                menu = [(c, c) for c in choices] if spec.default is not None else [(unset, ""), *[(c, c) for c in choices]]
                inputs[spec.name] = gr.Dropdown(menu, value=spec.default or "", allow_custom_value=True, **look)
            elif isinstance(spec.default, bool):
                inputs[spec.name] = gr.Checkbox(value=spec.default, **look)
            elif spec.name in FRACTIONS:
                top = 0.9 if spec.name == "enhance_smooth" else 1.0
                inputs[spec.name] = gr.Slider(0, top, value=spec.default, step=0.05, **look)
            elif spec.name in WHOLE_NUMBERS:  # text: empty is the default
                inputs[spec.name] = gr.Textbox("", placeholder="default", max_lines=1, **look)
        return inputs

    def build(self):
        gr = gradio()
        telemetry = os.environ.get(TELEMETRY)
        with gr.Blocks(title="pcavs", analytics_enabled=False) as page:
            gr.Markdown("# pcavs: a photo that talks\nOne photo of a face and a voice in, a lip-synced video out "
                        "(PC-AVS, CVPR 2021).")
            if self.warning:
                gr.Markdown(f"**Warning:** {html.escape(self.warning)}", elem_id="warning")
            with gr.Tab("Make a video"):
                self.video_tab(gr)
            with gr.Tab("Live"):
                self.live_tab(gr)
        if telemetry is None:  # Gradio sets it for its whole process; the server changes no environment variable
            os.environ.pop(TELEMETRY, None)
        else:
            os.environ[TELEMETRY] = telemetry
        return page

    def video_tab(self, gr) -> None:
        with gr.Row():
            with gr.Column():
                face = unread(gr.Image(sources=["upload", "webcam"], type="filepath", label="Photo", elem_id="face"))
                audio = unread(gr.Audio(sources=["upload", "microphone"], type="filepath", label="Voice", elem_id="voice"))
                pose_choice = gr.Radio(list(POSE_CHOICES), value="demo", label="Head motion",
                                       info="the demo clip, a video (uploaded or from the webcam) or none "
                                            "(the photo's own pose)", elem_id="pose_choice")
                pose_video = unread(gr.Video(sources=["upload"], label="Head-motion video", visible=False,
                                             elem_id="pose_video"))
                score = gr.Checkbox(False, label="lip-sync score", elem_id="score",
                                    info="score the result with SyncNet (its weights: pcavs download syncnet)")
                with gr.Accordion("Options", open=False):
                    options = self.option_inputs(gr)
                with gr.Row():
                    go = gr.Button("Make the video", variant="primary", elem_id="go")
                    stop = gr.Button("Stop", variant="stop", visible=False, elem_id="stop")
            with gr.Column():
                player = gr.HTML(label="The video, as it is made", elem_id="preview")
                final = gr.HTML(elem_id="final")
                scores = gr.Markdown(elem_id="scores")
        job_id = gr.State()
        gr.Examples([[str(DEMO_FACE), str(DEMO_AUDIO), "demo"], [str(DEMO_FACE), str(DEMO_AUDIO), "none"]],
                    [face, audio, pose_choice], label="Examples (the bundled demo media)")
        pose_choice.change(lambda choice: gr.update(visible=choice in ("upload", "webcam"),
                                                    sources=[choice] if choice in ("upload", "webcam") else None),
                           pose_choice, pose_video, queue=False, api_visibility="private")
        making = go.click(_keywords(self.make_video, gr), [face, audio, pose_choice, pose_video, score],
                          [player, final, scores, job_id, go, stop], inputs_kwargs=options, api_visibility="private",
                          concurrency_limit=None, show_progress="hidden")
        making.then(lambda: (gr.update(value="Make the video", interactive=True), gr.update(visible=False)),
                    None, [go, stop], api_visibility="private", queue=False)
        stop.click(self.stop, job_id, [go, stop], cancels=[making], api_visibility="private", queue=False)
        api_files = [unread(gr.File(visible=False)) for _ in ("face", "audio", "pose")]
        gr.Button(visible=False).click(_keywords(self.generate, gr), api_files, gr.File(visible=False),
                                       inputs_kwargs=options, api_name="generate", concurrency_limit=None)

    def live_tab(self, gr) -> None:
        gr.Markdown("Speak into the microphone: the face answers as you speak, over WebRTC. Where this machine makes "
                    "frames slower than real time, frames are dropped to stay in sync with the voice.")
        with gr.Row():
            with gr.Column():
                photo = unread(gr.Image(str(DEMO_FACE), sources=["upload", "webcam"], type="filepath", label="Face",
                                        elem_id="live_photo"))
                ready = gr.Markdown("The demo face is used until you choose another.", elem_id="avatar_status")
                token = gr.Textbox(visible=False, elem_id="live_avatar")
            with gr.Column():
                gr.HTML('<div id="live_ui"><video autoplay playsinline muted class="pcavs-live-video"></video>'
                        '<div class="pcavs-live-buttons"><button id="live_record" class="lg primary">Record</button> '
                        '<button id="live_stop" class="lg stop">Stop</button> <label class="pcavs-probe">'
                        '<input type="checkbox" checked> latency probe (a corner square lights with the voice)'
                        '</label></div><div class="pcavs-live-figures">Press Record and speak.</div></div>')
        photo.upload(self.prepare, photo, [ready, token], api_visibility="private", concurrency_limit=None)
        photo.input(self.prepare, photo, [ready, token], api_visibility="private", concurrency_limit=None)


CSS = """
.pcavs-canvas, .pcavs-final, .pcavs-live-video { width: 100%; max-width: 512px; background: #111; display: block; }
.pcavs-player progress { width: 100%; max-width: 512px; }
.pcavs-live-buttons { margin: 8px 0; }
"""


def head(ice_servers: list[dict]) -> str:
    """The page's <head> additions: its script and the ICE servers Live uses."""
    script = resources.files("pcavs.app").joinpath("static/page.js").read_text(encoding="utf-8")
    servers = json.dumps(ice_servers)
    return f"<script>window.pcavsIceServers = {servers};</script><script>{script}</script>"


def _keywords(function, gr):
    """`function(..., request, progress, **options)` shown to Gradio with one keyword per form option and its default,
    so `/generate` takes every option by name and the client may leave any out; `request` is Gradio's request and
    `progress` its progress bar."""
    signature = inspect.signature(function)
    special = {"request": lambda p: p.replace(annotation=gr.Request), "progress": lambda p: p.replace(default=gr.Progress())}
    kept = [special.get(p.name, lambda p: p)(p) for p in signature.parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD]
    defaults = {f.name: f.default for f in fields(Options)}
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name]) for name in FORM_OPTIONS]
    if inspect.isgeneratorfunction(function):  # Gradio streams the outputs of a generator function only
        def wrapper(*args, **kwargs):
            yield from function(*args, **kwargs)
    else:
        def wrapper(*args, **kwargs):
            return function(*args, **kwargs)
    wrapper.__name__, wrapper.__doc__ = function.__name__, function.__doc__
    wrapper.__annotations__ = {"request": gr.Request}
    wrapper.__signature__ = signature.replace(parameters=kept + extra)
    return wrapper
