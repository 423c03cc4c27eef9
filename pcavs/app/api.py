"""The HTTP API for integrators (OpenAPI at /docs), served beside the page by `pcavs serve`:

- `POST /v1/videos`: a multipart form with `face`, `audio`, an optional `pose` and any option by name;
  202 with {"id", "status"}.
- `GET /v1/videos/{id}`: status (queued, running, done, failed), stage, progress, frames, total, error, position.
- `GET /v1/videos/{id}/frames`: the frames as they are made, a `multipart/x-mixed-replace` stream of JPEGs
  (each part's `X-Frame-Index`, `X-Frame-Total`), with a JSON status part each second without a frame and at the end.
- `GET /v1/videos/{id}/voice`: the voice as the job heard it (16 kHz wav), for a player's sound.
- `GET /v1/videos/{id}/content`: the mp4 once done.  `DELETE /v1/videos/{id}`: cancel and delete.
- `POST /live/offer`: WebRTC, {"sdp", "type", "avatar"?, "probe"?} in, the answer out; `GET /live/{session}`:
  its figures; `DELETE /live/{session}`: stop it.

Job ids are unguessable and never listed: a job's URLs are its client's alone. With `--auth`, every route
needs the page's login cookie or HTTP Basic credentials.
"""

import base64
import hmac
import inspect
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.assets import DEMO_FACE
from ..core.errors import InputError, PcavsError, one_line
from ..core.options import Options
from .server import Server

FORM_OPTIONS = tuple(f.name for f in fields(Options) if f.metadata["cli"] and f.name not in ("mouth", "enhance_checkpoint"))
BOUNDARY = "pcavs-frame"
SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}$")


class TooLarge(InputError):
    """An upload over the server's size limit."""


def client_of(request: Any) -> str:
    """Who sent a request, for the per-client limits: its address."""
    return request.client.host if request.client is not None else "unknown"


class Auth:
    """The server's logins: HTTP Basic for API clients, or the page's own login cookie."""

    def __init__(self, pairs: list[tuple[str, str]] | None):
        self.pairs = pairs or []
        self.cookie_user: Callable[[Any], str | None] = lambda request: None  # set once the page is mounted

    def allows(self, request: Any) -> bool:
        if not self.pairs:
            return True
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            return any(hmac.compare_digest(user, u) & hmac.compare_digest(password, p) for u, p in self.pairs)
        return self.cookie_user(request) is not None


def said(description: str, field: str = "error") -> dict:
    """An answer of the API's description: JSON with one line under `field` ("detail" where FastAPI words it)."""
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "properties": {field: {"type": "string"}}, "required": [field]}}}}


async def malformed(request: Any, exc: Any):
    """A request to the API whose form or query FastAPI could not read (a missing file, a number that is not one):
    400 with the one-line {"error"} of every other refusal, not FastAPI's list of 422 details."""
    from fastapi.exception_handlers import request_validation_exception_handler
    from fastapi.responses import JSONResponse

    if not request.url.path.startswith(("/v1/", "/live/")):
        return await request_validation_exception_handler(request, exc)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
        problems.append(f"{where}: {error.get('msg', 'invalid').lower()}")
    text = one_line("; ".join(problems) or "the request cannot be read")
    return JSONResponse({"error": f"{text} (send face, audio, an optional pose and options as a multipart form)"},
                        status_code=400)


NO_VIDEO = said("no such video (cancelled, deleted, expired, or never made)", "detail")


def router(server: Server, auth: Auth, max_upload: int):
    """The API's routes, for `app.include_router`."""
    from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

    def login(request: Request) -> None:
        if not auth.allows(request):
            raise HTTPException(401, "log in first (HTTP Basic, or the page's login)",
                                headers={"WWW-Authenticate": 'Basic realm="pcavs"'})

    api = APIRouter(dependencies=[Depends(login)], responses={401: said("no login (with --auth)", "detail")})

    def refused(exc: PcavsError, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": one_line(exc)}, status_code=status)

    def job_of(job_id: str):
        job = server.videos.get(job_id)
        if job is None:
            raise HTTPException(404, "no such video (cancelled, deleted, expired, or never made)")
        return job

    async def save(upload: UploadFile | None, folder: Path, role: str) -> tuple[str, str] | None:
        if upload is None or not upload.filename:
            return None
        shown = Path(upload.filename).name[:120] or role
        suffix = SUFFIX.search(shown)
        path = folder / f"upload-{role}{suffix.group(0).lower() if suffix else ''}"
        size = 0
        with open(path, "wb") as out:
            while block := await upload.read(1 << 20):
                size += len(block)
                if size > max_upload:
                    raise TooLarge(f"{role}: {shown} is larger than this server's {max_upload >> 20} MB limit")
                out.write(block)
        return str(path), shown

    # pose is typed UploadFile, not `UploadFile | None`: the latter is described as "a file or null", which a
    # multipart form cannot send (a generated "null" text part was answered 422); not sent, it is None all the same
    async def create(request: Request, face: UploadFile = File(...), audio: UploadFile = File(...),
                     pose: UploadFile = File(None), **options: str | None):
        """Make a talking-face video: 202 with the job's id; poll `GET /v1/videos/{id}`."""
        import tempfile

        import anyio

        with tempfile.TemporaryDirectory(dir=server.workspace.root) as staging:
            try:
                files = [await save(f, Path(staging), role) for f, role in ((face, "face"), (audio, "audio"), (pose, "pose"))]
                values = {k: v for k, v in options.items() if v not in (None, "")}
                job = await anyio.to_thread.run_sync(server.submit, client_of(request), *files, values)
            except PcavsError as exc:
                return refused(exc, 413 if isinstance(exc, TooLarge) else 400)
        return JSONResponse({"id": job.id, "status": job.status}, status_code=202)

    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=Form(None, description=_help(name)),
                               annotation=str | None) for name in FORM_OPTIONS]
    signature = inspect.signature(create)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    create.__signature__ = signature.replace(parameters=kept + extra)
    api.post("/v1/videos", status_code=202, summary="Make a video", responses={
        202: {"description": "queued: poll GET /v1/videos/{id}", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"id": {"type": "string"}, "status": {"type": "string"}},
            "required": ["id", "status"]}}}},
        400: said("the request cannot be made (the error names the file or option)"),
        411: said("no Content-Length"), 413: said("an upload over the server's limit")})(create)

    @api.get("/v1/videos/{job_id}", summary="A video's status", responses={404: NO_VIDEO})
    def status(job_id: str) -> dict:
        job = job_of(job_id)
        return job.summary(server.videos.position(job))

    @api.get("/v1/videos/{job_id}/content", summary="The mp4, once done", response_class=FileResponse,
             responses={200: {"content": {"video/mp4": {}}}, 404: NO_VIDEO, 409: said("not done")})
    def content(job_id: str):
        job = job_of(job_id)
        if job.status != "done" or job.video is None or not job.video.is_file():
            return JSONResponse({"error": f"the video is {job.status}, not done"}, status_code=409)
        return FileResponse(job.video, media_type="video/mp4", filename="talking_face.mp4")

    @api.get("/v1/videos/{job_id}/voice", summary="The voice as the job heard it (16 kHz wav)",
             response_class=FileResponse, responses={200: {"content": {"audio/wav": {}}}, 404: NO_VIDEO,
                                                     409: said("not decoded yet, or gone")})
    def voice(job_id: str):
        path = job_of(job_id).folder / "voice.wav"
        if not path.is_file():
            return JSONResponse({"error": "the voice is not there (yet, or any more)"}, status_code=409)
        return FileResponse(path, media_type="audio/wav")

    @api.get("/v1/videos/{job_id}/frames", summary="The frames as they are made (multipart JPEG stream)",
             response_class=StreamingResponse, responses={
                 200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}},
                 400: said("start is not a frame index"), 404: NO_VIDEO})
    def frames(job_id: str, start: int = 0):
        job = job_of(job_id)
        if start < 0:
            return JSONResponse({"error": "start: a frame index, 0 or more"}, status_code=400)
        return StreamingResponse(_parts(server, job, start), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})

    @api.delete("/v1/videos/{job_id}", status_code=204, summary="Cancel and delete a video", responses={404: NO_VIDEO})
    def delete(job_id: str) -> None:
        job_of(job_id)
        server.videos.delete(job_id)

    @api.post("/live/offer", summary="Live: the browser's WebRTC offer in, the answer out", responses={
        400: said("not an offer"), 429: said("the queue is full, or this client already records")})
    async def offer(request: Request):
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return refused(InputError("offer: send JSON {\"sdp\": ..., \"type\": \"offer\"}"))
        try:
            photo = server.avatars.photo(body.get("avatar"), str(DEMO_FACE))
            return await server.sessions.offer(client_of(request), body.get("sdp"), body.get("type"), photo,
                                               bool(body.get("probe")))
        except PcavsError as exc:
            return refused(exc, 429 if "one live recording" in str(exc) or "queue" in str(exc) else 400)

    @api.get("/live/{session_id}", summary="Live: a recording's figures",
             responses={404: said("no such recording", "detail")})
    def live_figures(session_id: str) -> dict:
        session = server.sessions.get(session_id)
        if session is None:
            raise HTTPException(404, "no such recording")
        return session.figures.public()

    @api.delete("/live/{session_id}", status_code=204, summary="Live: stop a recording")
    async def live_stop(session_id: str) -> None:
        await server.sessions.stop(session_id)

    return api


def _parts(server: Server, job, start: int) -> Iterator[bytes]:
    def part(kind: str, body: bytes, headers: str = "") -> bytes:
        return (f"--{BOUNDARY}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n{headers}\r\n").encode() + body + b"\r\n"

    def state() -> bytes:
        return part("application/json", json.dumps(job.summary(server.videos.position(job))).encode())

    yield state()
    for item in job.follow(start):
        if item is None:
            yield state()
        else:
            index, jpeg = item
            yield part("image/jpeg", jpeg, f"X-Frame-Index: {index}\r\nX-Frame-Total: {job.total or ''}\r\n")
    yield state()
    yield f"--{BOUNDARY}--\r\n".encode()


def _help(name: str) -> str:
    return next(f.metadata["help"] for f in fields(Options) if f.name == name)
