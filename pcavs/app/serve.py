"""`pcavs serve` and `pcavs.serve()`: the web page, the HTTP API and Live, on one address (FastAPI + uvicorn).

The networks load once per process (one copy per device); every video job and Live recording waits in one
queue (see jobs.py) and each request is bounded (see limits.py). The server changes nothing process-wide:
no environment variable, no `PATH`; two servers in one notebook each keep working after the other closes.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.assets import DEMO_AUDIO, DEMO_FACE, DEMO_POSE
from ..core.errors import InputError
from .api import Auth, client_of, malformed, router
from .jobs import Devices, LiveWork
from .limits import HOST, JOB_TIMEOUT, MAX_FILE_SIZE, MAX_SECONDS, PER_CLIENT, PORT, QUEUE, Limits
from .page import CSS, Page, gradio, head
from .server import Server

ALL_INTERFACES = ("0.0.0.0", "::", "")
AUTH_VARIABLE = "PCAVS_AUTH"  # USER:PASSWORD (or several, comma-separated) when --auth-file is not given
log = logging.getLogger("pcavs.serve")


def serving_devices(device: str) -> list:
    """The devices jobs run on: "auto" is every CUDA GPU (else the best single device); any other name is that one."""
    import torch

    from ..core.devices import resolve_device

    if device == "auto" and torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [resolve_device(device)]


def ice_server(url: str) -> dict[str, str]:
    """A `--ice-server` URL as WebRTC's {urls, username, credential}: `turn:USER:PASSWORD@host:port` carries a login."""
    scheme, _, rest = url.partition(":")
    if scheme not in ("stun", "stuns", "turn", "turns") or not rest:
        raise InputError(f"--ice-server {url!r}: give stun:HOST:PORT or turn:USER:PASSWORD@HOST:PORT")
    login, at, place = rest.rpartition("@")
    if not at:
        return {"urls": url}
    user, _, password = login.partition(":")
    return {"urls": f"{scheme}:{place}", "username": user, "credential": password}


def read_logins(auth_file: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The logins from `auth_file` (one USER:PASSWORD a line) or else $PCAVS_AUTH (comma-separated); none when neither."""
    if auth_file is not None:
        try:
            text = Path(auth_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--auth-file: {auth_file}: cannot be read ({exc.strerror}); give a file of USER:PASSWORD lines") from None
        entries = [line.strip() for line in text.splitlines() if line.strip()]
        where = str(auth_file)
    else:
        entries = [e.strip() for e in os.environ.get(AUTH_VARIABLE, "").split(",") if e.strip()]
        where = f"${AUTH_VARIABLE}"
    pairs = []
    for entry in entries:
        user, colon, password = entry.partition(":")
        if not colon or not user or not password:
            raise InputError(f"{where}: {user or entry[:20]!r} is not USER:PASSWORD")
        pairs.append((user, password))
    return pairs


def warm_up(pipeline, live: LiveWork, wanted: Callable[[], bool]) -> None:
    """A few frames of the demo face, in the page's mode and in Live's: the first request then finds the networks'
    kernels chosen and their memory laid out (on a CPU the first job is otherwise about twice as slow). It gives
    way, at its next frame, once `wanted()` says a request is waiting for the device."""
    import numpy as np

    from ..core.facts import SAMPLE_RATE

    silence = [np.zeros(SAMPLE_RATE // 5, np.float32)]  # 5 frames: the first alone, then a batch
    try:
        for runner, mode in ((pipeline, "full"), (live.runner(pipeline), "crop")):
            for _ in runner.stream(str(DEMO_FACE), iter(silence), mode=mode, progress=False):
                if wanted():
                    return
    except Exception:  # noqa: BLE001 - a warm-up that fails costs the first request its speed, nothing more
        log.warning("warm-up failed", exc_info=True)


@dataclass
class Served:
    """A running server: its address, and `close()` to stop it and delete its folders."""

    url: str
    share_url: str | None
    server: Server
    _uvicorn: Any
    _thread: threading.Thread
    _page: Any

    @property
    def workspace(self):
        return self.server.workspace

    def close(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(30)
        self._page.close()
        self.server.close()

    def block(self) -> None:
        """Serve until Ctrl-C (or SIGTERM), then close."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()


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
    max_seconds: float = MAX_SECONDS,
    job_timeout: float = JOB_TIMEOUT,
    per_client: int = PER_CLIENT,
    allow_enhance: bool = True,
    ice_servers: list[str] | None = None,
    no_auth: bool = False,
    live_dtype: str | None = "auto",
    backend: Any = None,
    ray: str | None = None,
    replicas: int | str | None = None,
) -> Served:
    """Start the page, the HTTP API and Live at http://host:port (loopback by default) and return the server;
    `block=True` (the default outside notebooks) serves until Ctrl-C, then removes the server's folders.

    concurrency: jobs at a time per device; queue: requests waiting at most; max_file_size: the largest upload
    ("100mb", or bytes); max_seconds: the longest voice or head-motion video; job_timeout: seconds a job may
    run; per_client: places in the queue one client holds; allow_enhance: whether requests may ask for GFPGAN;
    auth: (user, password) pairs (default: $PCAVS_AUTH); share: a public *.gradio.live link too, which needs a
    login unless no_auth; ice_servers: STUN/TURN URLs for Live; live_dtype: Live's precision ("auto":
    bfloat16 on CPUs with bf16 instructions); checkpoints, device: as for Pipeline.from_pretrained;
    backend: where jobs run (default: this process's devices); ray: run them on Ray Serve replicas instead, on the
    cluster at this address ("auto": $RAY_ADDRESS or the one started here, else a new one; "local": a new one),
    `replicas` of them (N, or "MIN-MAX": Ray Serve's autoscaler keeps between the two; default: one per GPU, else 1;
    each CPU replica takes one CPU and one thread); Live runs on them too. See app/cluster.py.
    """
    gr = gradio()
    pairs = [auth] if isinstance(auth, tuple) else list(auth or read_logins())
    warning = None
    if share and not pairs:
        if not no_auth:
            raise InputError("share: a public link without a login lets anyone use this machine; set $PCAVS_AUTH "
                             "(USER:PASSWORD) or --auth-file, or add --no-auth to share it open")
        warning = "this server is shared publicly without a login: anyone with the link can use it"
        log.warning(warning)
        warnings.warn(warning, stacklevel=2)
    if host in ALL_INTERFACES and not pairs:
        warnings.warn(f"serving on every network interface ({host or '*'}): anyone who can reach this machine on port "
                      f"{port} can use the app; set $PCAVS_AUTH=USER:PASSWORD, or serve on 127.0.0.1", stacklevel=2)
    limits = Limits(max_seconds=max_seconds, job_timeout=job_timeout, per_client=per_client, allow_enhance=allow_enhance)
    max_upload = gr.utils._parse_file_size(max_file_size)
    if backend is None and ray is not None:
        from .cluster import start as start_ray

        backend = start_ray(ray, replicas, checkpoints, device, live_dtype)
    elif replicas is not None:
        raise InputError("replicas (--replicas): only with ray (--ray), for its Ray Serve replicas; without Ray this process "
                         "runs one pipeline per device")
    if backend is None:
        from ..generation.pipeline import Pipeline
        from ..models.download import ensure_weights

        weights = ensure_weights(checkpoints)
        backend = Devices([Pipeline.from_pretrained(weights, device=str(d)) for d in serving_devices(device)], concurrency,
                          live_dtype)
    servers = [ice_server(url) for url in ice_servers or []]
    server = Server(backend, limits, queue, servers)
    if isinstance(backend, Devices):
        backend.warm(lambda pipeline: warm_up(pipeline, backend.live_work, lambda: server.queue.counts() != (0, 0)))
    try:
        app, page = build_app(server, Auth(pairs), max_upload, warning, servers)
        served = _start(app, page, server, host, port)
    except BaseException:
        server.close()
        raise
    if share:
        served.share_url = _tunnel(host, port)
    print(f"pcavs serve: {served.url}" + (f" (public: {served.share_url})" if served.share_url else ""), flush=True)
    if block and not _in_notebook():
        served.block()
    return served


def build_app(server: Server, auth: Auth, max_upload: int, warning: str | None, ice_servers: list[dict]):
    """The ASGI app: the HTTP API and Live's routes, and the page mounted at /."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    gr = gradio()
    app = FastAPI(title="pcavs", description="Talking faces from a photo and a voice (PC-AVS): the HTTP API.",
                  version=_version())

    @app.middleware("http")
    async def bounded(request: Request, call_next):
        """Uploads to the API are bounded before they are read; the page's uploads are noted with their client."""
        path = request.url.path
        if request.method == "POST" and path.startswith("/v1/"):
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"error": "send the upload with a Content-Length"}, status_code=411)
            if not length.isdigit() or int(length) > 3 * max_upload + (1 << 16):
                return JSONResponse({"error": f"the upload is larger than this server takes ({max_upload >> 20} MB a file)"},
                                    status_code=413)
        response = await call_next(request)
        if request.method == "GET" and "text/html" in response.headers.get("content-type", "") and not auth.allows(request):
            body = b"".join([chunk async for chunk in response.body_iterator])  # the login page: no API description
            body = re.sub(rb"window\.gradio_api_info = .*?;</script>", b"window.gradio_api_info = {};</script>", body, flags=re.S)
            return Response(body, status_code=response.status_code, media_type="text/html",
                            headers={k: v for k, v in response.headers.items() if k.lower() != "content-length"})
        if request.method == "POST" and path.endswith("/gradio_api/upload") and response.status_code == 200:
            body = b"".join([chunk async for chunk in response.body_iterator])
            for uploaded in json.loads(body or b"[]"):
                server.uploads.add(uploaded, client_of(request))
            return Response(body, status_code=200, headers={k: v for k, v in response.headers.items()
                                                            if k.lower() != "content-length"},
                            media_type=response.media_type)
        return response

    app.include_router(router(server, auth, max_upload))
    app.add_exception_handler(RequestValidationError, malformed)
    page = Page(server, warning).build()
    page.queue(max_size=server.queue.size * 4 + 16, default_concurrency_limit=None)
    gr.mount_gradio_app(app, page, "/", auth=auth.pairs or None, max_file_size=max_upload, show_error=True,
                        allowed_paths=[str(DEMO_FACE), str(DEMO_AUDIO), str(DEMO_POSE)], head=head(ice_servers), css=CSS,
                        footer_links=["api"])
    mounted = next(route.app for route in app.routes if getattr(route, "path", None) == "")
    auth.cookie_user = lambda request: mounted.tokens.get(
        request.cookies.get(f"access-token-{mounted.cookie_id}") or request.cookies.get(
            f"access-token-unsecure-{mounted.cookie_id}"))
    page.has_launched = True  # Gradio checks that inputs were uploaded only once it counts the app as launched
    return app, page


def _start(app, page, server: Server, host: str, port: int) -> Served:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", ws="none", lifespan="on")
    runner = uvicorn.Server(config)
    runner.install_signal_handlers = lambda: None  # the caller's thread keeps its own handlers
    thread = threading.Thread(target=runner.run, name="pcavs-serve", daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not runner.started:
        if not thread.is_alive() or time.monotonic() > end:
            raise InputError(f"port {port} on {host} could not be served (in use?); choose another with --port")
        time.sleep(0.05)
    shown = "127.0.0.1" if host in ALL_INTERFACES else host
    shown = f"[{shown}]" if ":" in shown else shown
    return Served(f"http://{shown}:{port}/", None, server, runner, thread, page)


def _tunnel(host: str, port: int) -> str | None:
    """A public *.gradio.live address for the server (Gradio's tunnel, which needs the internet)."""
    try:
        import secrets

        from gradio.networking import setup_tunnel

        return setup_tunnel("127.0.0.1" if host in ALL_INTERFACES else host, port, secrets.token_urlsafe(32), None, None)
    except Exception as exc:  # noqa: BLE001 - no internet here is the common case; serving goes on
        warnings.warn(f"share: no public link ({type(exc).__name__}: {exc}); serving on this address only", stacklevel=3)
        return None


def _version() -> str:
    from ..core.version import __version__

    return __version__


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None and type(get_ipython()).__name__ != "TerminalInteractiveShell"
