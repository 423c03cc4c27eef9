"""`pcavs serve --ray`: the networks run as a Ray Serve deployment, the page and the HTTP API stay in this process.

`Generator` is the deployment: each replica loads the networks once (one GPU each on a GPU cluster, else one CPU
and one torch thread each) and takes one job or Live recording at a time; a fixed number of replicas, or between
a least and a most, scaled by Ray Serve's autoscaler. A job travels as bytes: the frontend reads the face, the
voice (16 kHz wav) and the pose from the job's folder and sends them; the replica works in a temporary folder
of its own, streams the same events as `make_video` (frames as JPEG), then the mp4 as bytes, and deletes its
folder; the frontend writes the mp4 into the job's folder. No filesystem is shared, so results reach the client
however many machines the replicas run on.

Live: WebRTC ends in the frontend (live.py). A thread of the frontend pumps the recording's audio chunks into a
Ray queue (an actor of its own, one per recording); the replica reads them, runs `Pipeline.stream(...,
realtime=True)` as the in-process server does (bfloat16 where the CPU has it, the avatar prepared once per photo)
and streams each frame back through Serve's streaming handle.

`RayBackend` is the frontend's `Backend`: one slot per replica (the most, when autoscaled: Ray Serve queues what
its replicas cannot take yet at the handle, and scales), in the server's one queue. A replica that dies under a
job (killed, out of memory, its node lost) is replaced by Ray Serve; the job runs once more, on another replica,
then fails with a one-line reason. A replica that dies under a Live recording ends it, failed.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import numpy as np

from ..batches.cluster import actor_reason, connect, import_ray, worker_model
from ..core.errors import InputError, PcavsError, one_line
from .jobs import POLL, RESULT_NAME, Inputs, LiveFrame, LiveWork, Slot, ended, hand_over, read_photo, relay
from .video import make_video

APP = "pcavs"  # the Ray Serve application of `pcavs serve --ray`
DEPLOYMENT = "Generator"
RETRIES = 1  # runs of a job after the first, when its replica dies under it
SERVE_INSTALL = 'pip install "pcavs[ray]" (Ray Serve: ray[serve])'
UPSCALE_DELAY = 5.0  # s of more requests than replicas before Ray Serve adds one (a job takes seconds to minutes)
DOWNSCALE_DELAY = 120.0  # s of fewer before it removes one (a replica's start, loading the networks, costs seconds)
LOOK_BACK = 15.0  # s of requests the autoscaler averages over (more than Serve's 10 s between metrics)


def import_serve():
    """The `ray.serve` module, or a one-line InputError saying how to install it."""
    import_ray()
    try:
        from ray import serve
    except ImportError:
        raise InputError(f"--ray: serving on Ray needs Ray Serve, which is not installed; {SERVE_INSTALL}") from None
    return serve


class Generator:
    """One replica: a Pipeline loaded once, then jobs and Live recordings one after another (the Ray Serve
    deployment's class)."""

    def __init__(self, model: dict, threads: int | None, live_dtype: str | None = "auto"):
        from ..generation.pipeline import Pipeline

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.pipeline = Pipeline.from_pretrained(**model)
        self.live_work = LiveWork(live_dtype)

    async def make(self, files: dict[str, tuple[str, bytes]], options: Any, folder: str) -> AsyncIterator[tuple]:
        """The job of `files` (role -> (file name, bytes): face, voice and pose) with `options`: make_video's events,
        with each new stage among them, and the mp4 as ("video", bytes). Errors name the files as in the frontend's
        `folder`."""
        async for event in _threaded(self._video, files, options, folder):
            yield event

    async def live(self, photo: tuple[str, bytes], chunks: Any) -> AsyncIterator[LiveFrame]:
        """A Live recording of `photo` (its path in the frontend, its bytes) speaking the 16 kHz chunks of the Ray
        queue `chunks` (None: the end): `Backend.live`'s frames."""
        async for frame in _threaded(self._record, photo, chunks):
            yield frame

    def _video(self, files: dict, options: Any, folder: str, put: Callable[[Any], None], stop: threading.Event) -> None:
        said = [None]

        def stage(text: str) -> None:
            if text != said[0]:
                said[0] = text
                put(("stage", text))

        with _unpacked(files, folder) as paths:
            inputs = Inputs(paths["face"], paths["voice"], paths.get("pose"), {})
            relay(make_video(self.pipeline, inputs, options, paths["face"].parent, stage),
                  lambda event: put(("video", Path(event[1]).read_bytes()) if event[0] == "video" else event), stop)

    def _record(self, photo: tuple[str, bytes], chunks: Any, put: Callable[[Any], None], stop: threading.Event) -> None:
        from ray.exceptions import RayActorError
        from ray.util.queue import Empty

        def audio() -> Iterator[np.ndarray]:
            while not stop.is_set():
                try:
                    chunk = chunks.get(timeout=POLL)
                except Empty:
                    continue
                except RayActorError:  # the frontend ended the recording and removed its queue
                    return
                if chunk is None:
                    return
                yield chunk

        shown, data = photo
        with _unpacked({"photo": (shown, data)}, str(Path(shown).parent)) as paths:
            relay(self.live_work.frames(self.pipeline, paths["photo"], audio()), put, stop)


async def _threaded(work: Callable[..., None], *args: Any) -> AsyncIterator:
    """What `work(*args, put, stop)` puts, from a thread of its own. Cancelling the request stops it at its next
    item; the replica's next request waits until it has ended (one at a time)."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=hand_over, name="pcavs-replica-work", daemon=True, args=(
        lambda give: work(*args, give, stop), lambda item: loop.call_soon_threadsafe(items.put_nowait, item)))
    thread.start()
    try:
        while True:
            more, value = await items.get()
            if ended(more, value):
                return
            yield value
    finally:
        stop.set()
        await loop.run_in_executor(None, thread.join)


@contextlib.contextmanager
def _unpacked(files: dict[str, tuple[str, bytes]], folder: str) -> Iterator[dict[str, Path]]:
    """`files` (role -> (file name, bytes)) written into a temporary folder of this replica's, deleted after; errors
    name them as in the frontend's `folder`."""
    with tempfile.TemporaryDirectory(prefix="pcavs-replica-") as work:
        paths = {}
        for role, (name, data) in files.items():
            paths[role] = Path(work) / Path(name).name
            paths[role].write_bytes(data)
        try:
            yield paths
        except PcavsError as exc:
            raise type(exc)(str(exc).replace(work, folder)) from None


class RayBackend:
    """The frontend's slots: one per replica of the Generator deployment (the most, when autoscaled), each with a
    thread that follows its job or recording."""

    def __init__(self, handle: Any, slots: int, device_type: str, close: Callable[[], None] = lambda: None):
        self.handle = handle.options(stream=True)
        self.device_type = device_type
        self._close = close
        self._slots = [Slot(self.handle, ThreadPoolExecutor(1, thread_name_prefix=f"pcavs-replica-{n}"))
                       for n in range(slots)]

    def slots(self) -> list[Slot]:
        return list(self._slots)

    def work(self, handle: Any, inputs: Inputs, options: Any, folder: Path, stage: Callable[[str], None]) -> Iterator[tuple]:
        """The job on a replica (`handle`: the deployment's streaming handle); events as `make_video`'s, the mp4
        written into `folder`. Runs once more when the replica dies under it; frames already given are not repeated."""
        from ray.exceptions import RayActorError

        files = {role: (path.name, path.read_bytes())
                 for role, path in (("face", inputs.face), ("voice", inputs.voice), ("pose", inputs.pose)) if path}
        given = 0
        for attempt in range(RETRIES + 1):
            try:
                for event in _remote(handle.make.remote(files, options, str(folder))):
                    if event[0] == "frame":
                        if event[1] < given:
                            continue
                        given = event[1] + 1
                    elif event[0] == "video":
                        event = ("video", _write(folder / RESULT_NAME, event[1]))
                    yield event
                return
            except RayActorError as exc:  # the replica died under the job
                if attempt == RETRIES:
                    raise PcavsError(f"its replica died {attempt + 1} times while making it ({actor_reason(exc)})") from None
                yield "stage", "its replica stopped; making it again on another"

    def live(self, handle: Any, photo: Path, audio: Iterator[np.ndarray]) -> Iterator[LiveFrame]:
        """A Live recording on a replica: a thread here pumps `audio` into a Ray queue (None at the end), the frames
        come back through the deployment's streaming handle. A replica that dies ends it with a one-line error."""
        from ray.exceptions import RayActorError
        from ray.util.queue import Queue

        data = read_photo(photo)
        chunks = Queue(actor_options={"num_cpus": 0})
        threading.Thread(target=_pump, args=(audio, chunks), name="pcavs-live-pump", daemon=True).start()
        try:
            yield from _remote(handle.live.remote((str(photo), data), chunks))
        except RayActorError as exc:
            raise PcavsError(f"its replica died while recording ({actor_reason(exc)}); record again") from None
        finally:
            chunks.shutdown(force=True)

    def close(self) -> None:
        for slot in self._slots:
            slot.thread.shutdown(wait=False)
        self._slots.clear()
        self._close()


def _remote(response: Any) -> Iterator:
    """The items of a replica's streaming `response`; its own error raised as it was in the replica (RayActorError
    when the replica died); cancelled when left early (cancelled, timed out, or the server stops)."""
    from ray.exceptions import RayActorError, RayTaskError

    ended = False
    try:
        yield from response
        ended = True
    except RayTaskError as exc:  # the work's own error, raised in the replica
        ended = True
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, Exception) else PcavsError(one_line(exc))) from None
    except RayActorError:
        ended = True
        raise
    finally:
        if not ended:
            response.cancel()


def _pump(audio: Iterator[np.ndarray], chunks: Any) -> None:
    """`audio` into the Ray queue `chunks`, then None; ends quietly when the queue is gone (the recording ended)."""
    try:
        for chunk in audio:
            chunks.put(chunk)
        chunks.put(None)
    except Exception:  # noqa: BLE001 - the queue was shut down under the pump
        pass


def _write(path: Path, data: bytes) -> Path:
    """`data` as `path`, whole or absent."""
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    os.replace(part, path)
    return path


def replica_range(value: int | str | None, name: str) -> tuple[int, int] | None:
    """`value` as (least, most) replicas: N is (N, N), "MIN-MAX" a range for Ray Serve's autoscaler, None the default;
    `name` (the flag or argument) heads the one-line error."""
    if value is None:
        return None
    text = str(value).strip()
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not match:
        raise InputError(f"{name}: {text!r} is not N or MIN-MAX; give a number of replicas (e.g. 2) or a range to "
                         "autoscale in (e.g. 1-4)")
    low, high = int(match[1]), int(match[2] or match[1])
    if low < 1 or high < low:
        raise InputError(f"{name}: {text}: give 1 or more replicas, and the least before the most (e.g. 1-4)")
    return low, high


def replica_plan(resources: dict, replicas: tuple[int, int] | None) -> tuple[tuple[int, int], dict, int | None, str]:
    """((least, most) replicas, actor resources, torch threads, device type): one GPU each on a GPU cluster (one per
    GPU unless `replicas` says), else one CPU and one thread each (`replicas`, default 1)."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return replicas or (gpus, gpus), {"num_gpus": 1, "num_cpus": 1}, None, "cuda"
    return replicas or (1, 1), {"num_cpus": 1}, 1, "cpu"


def scaling(replicas: tuple[int, int]) -> dict:
    """The Generator's replica options: a fixed number, or Ray Serve's autoscaling from the least to the most with one
    request (a job or a recording) per replica, quick to add a replica and slow to remove one."""
    low, high = replicas
    if low == high:
        return {"num_replicas": low}
    return {"autoscaling_config": {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": 1,
                                   "upscale_delay_s": UPSCALE_DELAY, "downscale_delay_s": DOWNSCALE_DELAY,
                                   "look_back_period_s": LOOK_BACK}}


def deployment(serve, replicas: tuple[int, int], resources: dict):
    """The Generator deployment: `replicas` (least, most) of `resources` each, one job or recording at a time each."""
    return serve.deployment(Generator, name=DEPLOYMENT, max_ongoing_requests=1, ray_actor_options=resources,
                            **scaling(replicas))


def start(address: str, replicas: int | str | None, checkpoints: str | os.PathLike | None, device: str,
          live_dtype: str | None) -> RayBackend:
    """Connect to Ray at `address` ("local": a new Ray on this machine; "auto": $RAY_ADDRESS or the `ray start`
    cluster here, else a new one), run the Generator deployment (`replicas`: N, or "MIN-MAX" to autoscale), and
    return the backend that feeds it."""
    wanted = replica_range(replicas, "--replicas")
    ray = import_ray()
    serve = import_serve()
    owned = connect(ray, address)
    try:
        span, resources, threads, device_type = replica_plan(ray.cluster_resources(), wanted)
        model = worker_model({"checkpoints": checkpoints, "device": device if device != "auto" else device_type},
                             "num_gpus" in resources)
        serve.start(proxy_location="Disabled")  # no Serve HTTP proxy: this process serves the page and the API
        try:
            handle = serve.run(deployment(serve, span, resources).bind(model, threads, live_dtype), name=APP,
                               route_prefix=None)
        except (RuntimeError, ray.exceptions.RayError) as exc:
            raise PcavsError(f"--ray: the {DEPLOYMENT} replicas did not start ({one_line(exc, 200)}); "
                             "check the weights (--checkpoints) and the cluster's logs") from None
    except BaseException:
        if owned:
            ray.shutdown()
        raise

    def stop() -> None:
        try:
            serve.delete(APP)
        finally:
            if owned:
                serve.shutdown()
                ray.shutdown()

    return RayBackend(handle, span[1], device_type, stop)
