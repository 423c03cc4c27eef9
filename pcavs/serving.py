"""pcavs's web app as a Ray Serve application: `serve run pcavs.serving:app`, or with arguments
`serve run pcavs.serving:build replicas=4 gpus=1 checkpoints=/weights` (and the same `import_path` in a KubeRay
RayService).

Two deployments: `Frontend`, the ingress (one replica: the page, the HTTP API, Live's WebRTC and the one queue, as
`pcavs serve` runs them), and `Generator` (pcavs/app/cluster.py), the networks, `replicas` of them (videos and Live's
frames, as under `pcavs serve --ray`). Logins come from $PCAVS_AUTH in the frontend's environment.

Arguments (all optional, as strings): checkpoints (a weights folder or slim .safetensors the replicas can read;
default: $PCAVS_CHECKPOINTS, then the user cache), replicas (N, or MIN-MAX for Ray Serve's autoscaler; default 1),
gpus (1: one GPU per replica; default 0: one CPU and one torch thread each), queue, max_file_size, max_seconds,
job_timeout, per_client, allow_enhance.
"""
from __future__ import annotations

from typing import Any

from .app.cluster import RayBackend, deployment, import_serve, replica_plan, replica_range
from .app.limits import JOB_TIMEOUT, MAX_SECONDS, PER_CLIENT, Limits
from .core.errors import InputError

FRONTEND = "Frontend"


class Frontend:
    """The ingress: the page and the HTTP API over the Generator replicas (one replica: its queue is the queue)."""

    def __init__(self, generator: Any, settings: dict):
        self.generator = generator
        self.settings = settings
        self.server = None

    def __serve_build_asgi_app__(self):
        from .app.api import Auth
        from .app.page import gradio
        from .app.serve import QUEUE, build_app, read_logins
        from .app.server import Server

        s = self.settings
        backend = RayBackend(self.generator, s["slots"], s["device_type"])
        limits = Limits(max_seconds=s.get("max_seconds", MAX_SECONDS), job_timeout=s.get("job_timeout", JOB_TIMEOUT),
                        per_client=s.get("per_client", PER_CLIENT), allow_enhance=s.get("allow_enhance", True))
        self.server = Server(backend, limits, s.get("queue", QUEUE), [])
        max_upload = gradio().utils._parse_file_size(s.get("max_file_size", "100mb"))
        app, self.page = build_app(self.server, Auth(read_logins()), max_upload, None, [])
        return app

    def __del__(self):
        if self.server is not None:
            self.server.close()


def build(args: dict[str, str]) -> Any:
    """The application (Ray Serve's application builder): see the module's docstring for `args`."""
    serve = import_serve()
    known = {"checkpoints", "replicas", "gpus", "queue", "max_file_size", "max_seconds", "job_timeout", "per_client",
             "allow_enhance"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InputError(f"pcavs.serving: unknown argument {unknown[0]!r}; give any of {', '.join(sorted(known))}")
    settings: dict[str, Any] = {}
    for name, kind in (("queue", int), ("per_client", int), ("max_seconds", float), ("job_timeout", float)):
        if name in args:
            settings[name] = _number(args, name, kind)
    if "max_file_size" in args:
        settings["max_file_size"] = args["max_file_size"]
    if "allow_enhance" in args:
        settings["allow_enhance"] = str(args["allow_enhance"]).lower() in ("1", "true", "yes")
    gpus = _number(args, "gpus", int) if "gpus" in args else 0
    span, resources, threads, device_type = replica_plan({"GPU": gpus}, replica_range(args.get("replicas"),
                                                                                      "pcavs.serving: replicas"))
    settings.update(slots=span[1], device_type=device_type)
    model = {"checkpoints": args.get("checkpoints"), "device": device_type}
    generator = deployment(serve, span, resources).bind(model, threads, "auto")
    ingress = serve.deployment(serve.ingress()(Frontend), name=FRONTEND, num_replicas=1,
                               max_ongoing_requests=1000)
    return ingress.bind(generator, settings)


def _number(args: dict, name: str, kind: type):
    try:
        return kind(args[name])
    except (TypeError, ValueError):
        raise InputError(f"pcavs.serving: {name}={args[name]!r} is not a {'whole ' if kind is int else ''}number") from None


app = build({})  # `serve run pcavs.serving:app`: the defaults
