"""`pcavs serve` and `pcavs.serve()`: the web app (Gradio 6).

Tabs: "Make a video" (photo, voice and head motion from uploads, the webcam, the microphone or the
demo; the options of `pcavs.Options`; the video as it is made, then the mp4 and the lip-sync
scores) and "Live" (the microphone in, the face of a prepared avatar out). The endpoint `/generate`
takes `face`, `audio` and `pose` files and any option by name and returns the mp4.

A server that holds up: the networks load once per process (one copy per device); jobs queue, at
most `concurrency` at a time per device and `queue` waiting; each request works in a folder of
its own (see workspace.py); only those folders, Gradio's uploads and the demo media can be
fetched; bad input is a one-line error in the page and the server keeps serving.
"""
from __future__ import annotations

import collections
import contextlib
import html
import inspect
import logging
import os
import queue
import threading
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from ..core.assets import DEMO_AUDIO, DEMO_FACE, DEMO_POSE
from ..core.errors import InputError, PcavsError, one_line
from ..core.options import FRACTIONS, Options
from .workspace import Workspace

HOST = "127.0.0.1"
PORT = 7860
QUEUE = 16  # jobs waiting at most (the app's whole queue)
MAX_FILE_SIZE = "100mb"
JOBS = "pcavs-jobs"  # the concurrency group of every generation event: one limit for the page and the API
RESULT_NAME = "talking_face.mp4"
ALL_INTERFACES = ("0.0.0.0", "::", "")
FORM_OPTIONS = tuple(f.name for f in fields(Options) if f.metadata["cli"] and f.name not in ("mouth", "enhance_checkpoint"))
WHOLE_NUMBERS = ("seed", "face_index", "batch_size")
POSE_CHOICES = ("demo", "upload", "webcam", "none")
SEGMENT_SECONDS = 1.0  # of video per streamed segment
LIVE_LIMIT = 60  # s a live recording holds its place; then it queues again (and goes on), so others get a turn
H264_MSE = 'video/mp4; codecs="avc1.640028, mp4a.40.2"'  # what the streamed segments hold: H.264 High (x264's), AAC
log = logging.getLogger("pcavs.serve")
T = TypeVar("T")


def _gradio():
    try:
        import gradio
    except ImportError:
        raise PcavsError('the web app needs Gradio 6: pip install "pcavs[serve]"') from None
    if not gradio.__version__.startswith("6."):
        raise PcavsError(f"the web app needs Gradio 6 (found {gradio.__version__}): pip install \"pcavs[serve]\"")
    return gradio


def serving_devices(device: str) -> list:
    """The devices jobs run on: "auto" is every CUDA GPU (else the best single device); any other name is that one."""
    import torch

    from ..core.devices import resolve_device

    if device == "auto" and torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [resolve_device(device)]


def form_options(values: dict[str, Any]) -> Options:
    """The job's `Options` from the form's (or the API's) values: empty means the default."""
    text = {name: "" if value is None else str(value) for name, value in values.items()}
    return Options.from_strings(text).update(progress=False)


@contextlib.contextmanager
def page_errors() -> Iterator[None]:
    """Any failure becomes a one-line error shown in the page (a pcavs error's own words; anything else is
    logged with its traceback and shown as an internal error); the server goes on serving."""
    gr = _gradio()
    try:
        yield
    except gr.Error:
        raise
    except PcavsError as exc:
        log.warning("request failed: %s", one_line(exc))
        raise gr.Error(html.escape(one_line(exc), quote=False), print_exception=False) from None
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the server; the log keeps the traceback
        log.error("internal error:\n%s", traceback.format_exc())
        raise gr.Error(html.escape(f"internal error: {type(exc).__name__}: {one_line(exc)}", quote=False), print_exception=False) from None


def _with_options(function, gr):
    """`function(..., progress, **options)` shown to Gradio with one keyword per form option and its default, so
    `/generate` takes every option by name and the client may leave any out; `progress` is Gradio's bar."""
    signature = inspect.signature(function)
    kept = [p.replace(default=gr.Progress()) if p.name == "progress" else p
            for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    defaults = {f.name: f.default for f in fields(Options)}
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name]) for name in FORM_OPTIONS]
    if inspect.isgeneratorfunction(function):  # Gradio streams the outputs of a generator function only
        def wrapper(*args, **kwargs):
            yield from function(*args, **kwargs)
    else:
        def wrapper(*args, **kwargs):
            return function(*args, **kwargs)
    wrapper.__name__, wrapper.__doc__ = function.__name__, function.__doc__
    wrapper.__signature__ = signature.replace(parameters=kept + extra)
    return wrapper


class Jobs:
    """The loaded pipelines, one per device, each run by `concurrency` threads of its own.

    The networks always run on these threads, never on Gradio's pool: each thread keeps the memory
    its jobs freed for the next job (see core/devices.py), so memory grows with the number of
    worker threads, which is fixed, not with the number of requests served.
    """

    def __init__(self, checkpoints: str | os.PathLike | None, device: str, concurrency: int):
        from ..generation.pipeline import Pipeline
        from ..models.download import ensure_weights

        if concurrency < 1:
            raise InputError(f"concurrency: {concurrency} must be 1 or more (jobs at a time per device)")
        weights = ensure_weights(checkpoints)
        self.pipelines = [Pipeline.from_pretrained(weights, device=str(d)) for d in serving_devices(device)]
        self.limit = concurrency * len(self.pipelines)
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for number in range(concurrency):
            for pipeline in self.pipelines:
                self._free.put((pipeline, ThreadPoolExecutor(1, thread_name_prefix=f"pcavs-{pipeline.device}-{number}")))
        self._syncnet = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self) -> Iterator[tuple[Any, ThreadPoolExecutor]]:
        """A pipeline and its thread, for one job (Gradio's concurrency limit keeps this from waiting)."""
        taken = self._free.get()
        try:
            yield taken
        finally:
            self._free.put(taken)

    def run(self, work: Callable[[Any], T]) -> T:
        """`work(pipeline)` on a free pipeline's own thread; its result."""
        with self.slot() as (pipeline, thread):
            return thread.submit(work, pipeline).result()

    def iterate(self, work: Callable[[Any], Iterator[T]]) -> Iterator[T]:
        """The items of `work(pipeline)`, made on a free pipeline's own thread as they are taken here; a consumer
        that stops early stops the work at its next item."""
        with self.slot() as (pipeline, thread):
            items: queue.SimpleQueue = queue.SimpleQueue()
            stop = threading.Event()

            def produce() -> None:
                try:
                    source = work(pipeline)
                    try:
                        for item in source:
                            items.put((True, item))
                            if stop.is_set():
                                break
                    finally:
                        close = getattr(source, "close", None)
                        if close is not None:
                            close()
                    items.put((False, None))
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                    items.put((False, exc))

            done = thread.submit(produce)
            try:
                while True:
                    more, value = items.get()
                    if not more:
                        if value is not None:
                            raise value
                        return
                    yield value
            finally:
                stop.set()
                done.result()

    def close(self) -> None:
        """Let the threads go and the networks with them."""
        while not self._free.empty():
            self._free.get()[1].shutdown(wait=False)
        self.pipelines.clear()
        self._syncnet = None

    def syncnet(self):
        """SyncNet for the lip-sync score, loaded on first use (its weights: `pcavs download syncnet`)."""
        from ..metrics.evaluate import resolve_syncnet

        with self._lock:
            if self._syncnet is None:
                self._syncnet = resolve_syncnet(None, self.pipelines[0].device)
            return self._syncnet


@dataclass
class Served:
    """A running app: its address, and `close()` to stop it and delete its folders."""

    app: Any
    url: str
    share_url: str | None
    workspace: Workspace
    jobs: Jobs
    _restore: dict[str, str | None]

    def close(self) -> None:
        self.app.close()
        self.jobs.close()
        self.workspace.remove()
        for name, value in self._restore.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Avatars:
    """Avatars prepared once per photo and device (`Pipeline.prepare`), the most recent few kept."""

    KEEP = 8

    def __init__(self):
        self._prepared: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, photo: str, pipeline):
        key = (str(photo), str(pipeline.device))
        with self._lock:
            if key in self._prepared:
                self._prepared.move_to_end(key)
                return self._prepared[key]
        avatar = pipeline.prepare(photo, mode="crop")
        with self._lock:
            self._prepared[key] = avatar
            while len(self._prepared) > self.KEEP:
                self._prepared.popitem(last=False)
        return avatar


class App:
    """The handlers and the page of one server."""

    def __init__(self, jobs: Jobs, workspace: Workspace):
        self.jobs = jobs
        self.workspace = workspace
        self.avatars = Avatars()

    # ------------------------------------------------------------------ handlers

    def generate(self, face, audio, pose=None, **options) -> str:
        """Make a talking-face video: the photo `face`, the speech `audio`, an optional head-motion video `pose`,
        and any option of pcavs.Options by name (mode, noise, seed, pose_loop, enhance, ...). Returns the mp4."""
        with page_errors():
            job = form_options(options)
            for name, value in (("face", face), ("audio", audio)):
                if not value:
                    raise InputError(f"{name}: no file was given")
            with self.workspace.request() as folder:
                out = folder / RESULT_NAME
                self.jobs.run(lambda pipeline: pipeline.run(face, audio, pose or None, out, job))
            return str(out)

    def make_video(self, face, audio, pose_choice, pose_video, score, plays_h264, progress=None, **options):
        """The "Make a video" button: the video as it is made (segments), then the mp4 and the scores."""
        gr = _gradio()
        yield None, None, ""  # clears the previous run's results
        with page_errors():
            if not face:
                raise InputError("photo: upload a photo or take one with the webcam")
            if not audio:
                raise InputError("voice: upload a recording or record one with the microphone")
            pose = {"demo": str(DEMO_POSE), "none": None}.get(pose_choice, pose_video)
            if pose_choice in ("upload", "webcam") and not pose_video:
                raise InputError("head motion: upload a video or record one with the webcam (or choose demo or none)")
            job = form_options(options)
            syncnet = self.jobs.syncnet() if score else None  # missing SyncNet weights fail before the job
            with self.workspace.request() as folder:
                out = folder / RESULT_NAME

                def segments(pipeline):
                    frames = pipeline.stream(face, audio, pose, **asdict(job))
                    for segment in frames.segments(folder / "segments", out=out, seconds=SEGMENT_SECONDS):
                        yield segment, frames.frames, frames.feed.ready()

                progress(0, desc="Finding the face")
                for segment, made, total in self.jobs.iterate(segments):
                    if plays_h264:
                        yield str(segment), gr.skip(), gr.skip()
                    progress((made, total), desc="Making the frames", unit="frames")  # after the yield, which hides it
                    segment.unlink()  # Gradio has taken it (it asks for the next item only then)
                (folder / "segments").rmdir()
                if syncnet is not None:
                    progress(None, desc="Scoring the lip sync")
                    scores = self.jobs.run(lambda pipeline: lip_sync_scores(out, syncnet))
            if not plays_h264:
                gr.Warning("This browser cannot play H.264 video, so nothing plays here: download the mp4.")
        yield gr.skip(), str(out), scores if syncnet is not None else gr.skip()

    def prepare(self, photo) -> str:
        """The Live tab's photo changed: its avatar, prepared now (once)."""
        with page_errors():
            if not photo:
                return "Choose a photo (upload one or take one with the webcam)."
            start = time.perf_counter()
            self.jobs.run(lambda pipeline: self.avatars.get(photo, pipeline))
            return f"Avatar ready (face found and encoded in {time.perf_counter() - start:.1f} s): press Record."

    def live(self, chunk, photo, session):
        """A chunk of the microphone: fed to this recording's stream; the newest frame and the figures back."""
        gr = _gradio()
        if chunk is None:
            return gr.skip(), gr.skip(), session
        with page_errors():
            rate, samples = chunk
            if session is None or not session.running:
                from .live import LiveSession

                if not photo:
                    raise InputError("photo: choose the face to animate first")
                session = LiveSession(self.jobs, lambda pipeline: self.avatars.get(photo, pipeline), rate)
            html, figures = session.feed(rate, samples)
        return gr.skip() if html is None else html, figures, session

    @staticmethod
    def stop_live(session):
        if session is not None:
            session.stop()
        return None

    # ------------------------------------------------------------------ page

    def option_inputs(self, gr) -> dict[str, Any]:
        """One input per form option, from its field in `Options`: a menu, a checkbox, a slider or a number."""
        inputs = {}
        for spec in fields(Options):
            if spec.name not in FORM_OPTIONS:
                continue
            label, info, choices = spec.name.replace("_", " "), spec.metadata["help"], spec.metadata["choices"]
            look = dict(label=label, info=info, elem_id=f"option_{spec.name}")
            if choices:
                unset = "off" if spec.name == "enhance" else "default"
                menu = [(c, c) for c in choices] if spec.default is not None else [(unset, ""), *[(c, c) for c in choices]]
                # a value off the menu (from the API) reaches Options, whose error names the option and its values
                inputs[spec.name] = gr.Dropdown(menu, value=spec.default or "", allow_custom_value=True, **look)
            elif isinstance(spec.default, bool):
                inputs[spec.name] = gr.Checkbox(value=spec.default, **look)
            elif spec.name in FRACTIONS:
                top = 0.9 if spec.name == "enhance_smooth" else 1.0
                inputs[spec.name] = gr.Slider(0, top, value=spec.default, step=0.05, **look)
            elif spec.name in WHOLE_NUMBERS:  # text: a number box cannot be empty, and empty is the default here
                inputs[spec.name] = gr.Textbox("", placeholder="default", max_lines=1, **look)
        return inputs

    def page(self):
        gr = _gradio()
        with gr.Blocks(title="pcavs", analytics_enabled=False, delete_cache=(600, int(self.workspace.max_age))) as page:
            gr.Markdown("# pcavs: a photo that talks\nOne photo of a face and a voice in, a lip-synced video out "
                        "(PC-AVS, CVPR 2021).")
            plays_h264 = gr.Checkbox(True, visible=False)  # set by the browser when the page loads
            page.load(None, None, plays_h264, js=f"() => window.MediaSource ? MediaSource.isTypeSupported('{H264_MSE}') : false")
            with gr.Tab("Make a video"):
                self.video_tab(gr, plays_h264)
            with gr.Tab("Live"):
                self.live_tab(gr)
        return page

    def video_tab(self, gr, plays_h264) -> None:
        with gr.Row():
            with gr.Column():
                face = gr.Image(sources=["upload", "webcam"], type="filepath", label="Photo", elem_id="face")
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Voice", elem_id="voice")
                pose_choice = gr.Radio(list(POSE_CHOICES), value="demo", label="Head motion",
                                       info="the demo clip, a video (uploaded or from the webcam) or none "
                                            "(the photo's own pose)", elem_id="pose_choice")
                pose_video = gr.Video(sources=["upload"], label="Head-motion video", visible=False, elem_id="pose_video")
                score = gr.Checkbox(False, label="lip-sync score", elem_id="score",
                                    info="score the result with SyncNet (its weights: pcavs download syncnet)")
                with gr.Accordion("Options", open=False):
                    options = self.option_inputs(gr)
                go = gr.Button("Make the video", variant="primary", elem_id="go")
            with gr.Column():
                preview = gr.Video(label="The video, as it is made", streaming=True, autoplay=True, elem_id="preview")
                final = gr.File(label="The mp4", elem_id="final", interactive=False)
                scores = gr.Markdown(elem_id="scores")
        gr.Examples([[str(DEMO_FACE), str(DEMO_AUDIO), "demo"], [str(DEMO_FACE), str(DEMO_AUDIO), "none"]],
                    [face, audio, pose_choice], label="Examples (the bundled demo media)")
        pose_choice.change(lambda choice: gr.update(visible=choice in ("upload", "webcam"),
                                                    sources=[choice] if choice in ("upload", "webcam") else None),
                           pose_choice, pose_video, queue=False, api_visibility="private")
        go.click(_with_options(self.make_video, gr), [face, audio, pose_choice, pose_video, score, plays_h264],
                 [preview, final, scores], inputs_kwargs=options, api_visibility="private", concurrency_id=JOBS,
                 concurrency_limit=self.jobs.limit, show_progress_on=[final])
        # the API: files in, the mp4 out
        api_files = [gr.File(visible=False) for _ in ("face", "audio", "pose")]
        gr.Button(visible=False).click(_with_options(self.generate, gr), api_files, gr.File(visible=False),
                                       inputs_kwargs=options, api_name="generate", concurrency_id=JOBS,
                                       concurrency_limit=self.jobs.limit)

    def live_tab(self, gr) -> None:
        gr.Markdown("Speak into the microphone: the face answers as you speak. Frames are made as the voice "
                    "arrives; where this machine is slower than real time, frames are dropped to stay in sync.")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(str(DEMO_FACE), sources=["upload", "webcam"], type="filepath", label="Face",
                                 elem_id="live_photo")
                ready = gr.Markdown("The demo face is used until you choose another.", elem_id="avatar_status")
                mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone", elem_id="mic")
            with gr.Column():
                face = gr.HTML(elem_id="live_face", label="Live")
                figures = gr.Markdown(elem_id="live_stats")
        session = gr.State()
        photo.change(self.prepare, photo, ready, api_visibility="private", concurrency_id=JOBS,
                     concurrency_limit=self.jobs.limit)
        mic.stream(self.live, [mic, photo, session], [face, figures, session], stream_every=0.1, time_limit=LIVE_LIMIT,
                   concurrency_limit=self.jobs.limit, api_visibility="private", show_progress="hidden")
        mic.stop_recording(self.stop_live, session, session, api_visibility="private", queue=False)


def lip_sync_scores(video: Path, syncnet) -> str:
    """The lip-sync scores of the finished video, as Markdown."""
    from ..metrics.evaluate import evaluate

    measured = evaluate(video, syncnet=syncnet, device=next(syncnet.parameters()).device, progress=False)
    table = measured.summary().split("\n", 1)[1]  # the first row names the server's file
    return f"**Lip-sync score** (SyncNet)\n\n```\n{table}\n```"


def serve(
    host: str = HOST,
    port: int = PORT,
    share: bool = False,
    concurrency: int = 1,
    queue: int = QUEUE,
    max_file_size: str | int = MAX_FILE_SIZE,
    auth: list[tuple[str, str]] | tuple[str, str] | None = None,
    checkpoints: str | os.PathLike | None = None,
    device: str = "auto",
    block: bool = True,
) -> Served:
    """Start the web app at http://host:port (loopback by default) and return it; `block=True` (the default
    outside notebooks) serves until Ctrl-C, then removes the server's folders.

    concurrency: jobs at a time per device; queue: jobs waiting at most; max_file_size: the largest upload
    ("100mb", or bytes); auth: (user, password) pairs; share: a public *.gradio.live link (downloads
    Gradio's tunnel client on first use; needs the internet); checkpoints, device: as for Pipeline.from_pretrained.
    """
    gr = _gradio()
    if queue < 1:
        raise InputError(f"queue: {queue} must be 1 or more (jobs waiting at most)")
    if host in ALL_INTERFACES:
        warnings.warn(f"serving on every network interface ({host or '*'}): anyone who can reach this machine on port "
                      f"{port} can use the app; add --auth USER:PASSWORD, or serve on 127.0.0.1", stacklevel=2)
    jobs = Jobs(checkpoints, device, concurrency)
    workspace = Workspace()
    restore = {name: os.environ.get(name) for name in ("GRADIO_TEMP_DIR", "PATH")}
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.root)  # uploads and Gradio's copies live in the server's folder
    _put_tools_on_path(workspace.root / "bin")
    try:
        page = App(jobs, workspace).page()
        page.queue(max_size=queue)
        pairs = [auth] if isinstance(auth, tuple) else auth
        _, url, share_url = page.launch(
            server_name=host, server_port=port, share=share, auth=pairs or None, max_file_size=max_file_size,
            allowed_paths=[str(DEMO_FACE), str(DEMO_AUDIO), str(DEMO_POSE)], prevent_thread_lock=True, quiet=True,
            show_error=True,
        )
    except BaseException:
        workspace.remove()
        raise
    served = Served(page, url, share_url, workspace, jobs, restore)
    if share and not share_url:
        warnings.warn("share: no public link (Gradio's tunnel needs the internet; its reason is above); "
                      f"serving on {url} only", stacklevel=2)
    print(f"pcavs serve: {url}" + (f" (public: {share_url})" if share_url else ""), flush=True)
    if block and not _in_notebook():
        try:
            page.block_thread()
        finally:
            served.close()
    return served


def _put_tools_on_path(folder: Path) -> None:
    """Gradio's streaming video runs `ffmpeg` and `ffprobe` from PATH: pcavs's own, unless both are there."""
    import shutil

    if (shutil.which("ffmpeg") and shutil.which("ffprobe")) or os.name != "posix":  # the tools are shell scripts
        return
    from ..media.ffprobe import tools_folder

    os.environ["PATH"] = str(tools_folder(folder)) + os.pathsep + os.environ.get("PATH", "")


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None and type(get_ipython()).__name__ != "TerminalInteractiveShell"
