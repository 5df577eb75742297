"""The web app: the page (static files shipped in the package, nothing from the network) and the REST API.

Every response is JSON ``{"detail": "one line"}`` on error; a stack trace goes to the server's log, never
to a client. Uploads are checked by the I/O layer (format, size in pixels, decodable data) before a job
is queued; files live in a temporary folder that the server removes when it stops.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import shutil
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from superres.errors import SuperresError
from superres.io.image import DEFAULT_MAX_PIXELS
from superres.runtime import RunOptions
from superres.serve.jobs import TERMINAL, Job, JobQueue, one_line, safe_name

log = logging.getLogger("superres.serve")
STATIC = Path(__file__).parent / "static"
MAX_OUTSCALE = 16
Alpha = Literal["model", "bicubic"]
_COOKIE = "superres_token"
_MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".mp4": "video/mp4"}


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """How the server runs. ``token``: required on every request when set; ``allow_dirs``: folders whose
    files jobs may name by path; ``max_upload``: bytes per request; ``max_pixels``: the largest image
    accepted (decompression-bomb guard); ``sync_max_pixels``: the largest input ``POST /v1/upscale``
    answers directly; ``workdir``: where the temporary folder is made (default: the system's)."""

    options: RunOptions = field(default_factory=RunOptions)
    token: str | None = None
    allow_dirs: tuple[Path, ...] = ()
    max_upload: int = 200 << 20
    max_pixels: int = DEFAULT_MAX_PIXELS
    sync_max_pixels: int = 1024 * 1024
    workdir: Path | None = None
    keep: int = 200


class _Guard:
    """ASGI middleware: the token on every request, and the upload size limit while the body arrives
    (a body over the limit gets 413 whatever the route was doing with it)."""

    def __init__(self, app, token: str | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body

    def _given(self, scope) -> tuple[str, str]:
        """(the token the request carries, where: header, query or cookie)."""
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), "header"
        if b"x-token" in headers:
            return headers[b"x-token"].decode("latin-1"), "header"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if query:
            return query[0], "query"
        cookies = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        return (cookies[_COOKIE].value, "cookie") if _COOKIE in cookies else ("", "none")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token:
            given, where = self._given(scope)
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return await _send_error(send, 401, "this server needs its token (Authorization: Bearer TOKEN, "
                                         "or ?token=TOKEN in the page's address)")
            if where == "query":  # the page opened with ?token=: its own requests then carry the cookie
                send = _with_cookie(send, f"{_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/")
        length = dict(scope.get("headers") or []).get(b"content-length")
        limit_text = f"the upload is over this server's limit of {self.max_body / 2**20:g} MiB"
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await _send_error(send, 413, limit_text)
        state = {"received": 0, "over": False, "answered": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    state["over"] = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message):
            if state["over"]:  # whatever the app answers to a cut-off body, the client is told why
                if not state["answered"]:
                    state["answered"] = True
                    await _send_error(send, 413, limit_text)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["answered"]:
            await _send_error(send, 413, limit_text)


class _BodyTooLargeError(Exception):
    pass


def _with_cookie(send, cookie: str):
    async def send_with_cookie(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
        await send(message)

    return send_with_cookie


async def _send_error(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def model_list() -> list[dict]:
    """The named models (with scale, purpose and size), then bicubic."""
    from superres.zoo import DEFAULT_MODEL, MODELS
    from superres.zoo.pretrained import is_available

    rows = [{"name": name, "scale": spec.scale, "purpose": spec.purpose, "params": spec.params,
             "video": spec.video, "available": is_available(name), "default": name == DEFAULT_MODEL}
            for name, spec in MODELS.items()]
    rows.append({"name": "bicubic", "scale": None, "purpose": "MATLAB bicubic baseline, no network", "params": 0,
                 "video": False, "available": True, "default": False})
    return rows


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application; its job queue starts and stops with the app's lifespan."""
    config = config or ServeConfig()
    allow_dirs = tuple(Path(d).resolve() for d in config.allow_dirs)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        workdir = Path(tempfile.mkdtemp(prefix="superres-serve-", dir=config.workdir))
        app.state.jobs = JobQueue(config.options, workdir, max_pixels=config.max_pixels, keep=config.keep)
        app.state.workdir = workdir
        try:
            yield
        finally:
            app.state.jobs.close()

    app = FastAPI(title="superres", summary="Upscale images and videos with super-resolution networks.",
                  version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(_Guard, token=config.token, max_body=config.max_upload)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error (see the server's log)"}, status_code=500)

    def queue_of(request: Request) -> JobQueue:
        return request.app.state.jobs

    def job_of(request: Request, job_id: str) -> Job:
        try:
            return queue_of(request).get(job_id)
        except KeyError:
            raise HTTPException(404, f"no job {job_id!r}") from None

    def check_model(model: str, kind: str) -> None:
        rows = {m["name"]: m for m in model_list()}
        if model not in rows:
            raise HTTPException(400, f"unknown model {model!r}; choose one of {', '.join(rows)}")
        if not rows[model]["available"]:
            raise HTTPException(400, f"model {model!r} is not installed on this server")
        if rows[model]["video"] and kind != "video":
            raise HTTPException(400, f"{model} is a video network: submit a video")

    def server_path(text: str) -> Path:
        """A file inside an --allow-dir folder, symbolic links resolved, or 403/404."""
        if not allow_dirs:
            raise HTTPException(403, "this server does not read server-side paths (start it with --allow-dir)")
        for base in allow_dirs:
            candidate = (base / text).resolve()
            if candidate.is_relative_to(base):
                if not candidate.is_file():
                    raise HTTPException(404, f"{text}: no such file in the allowed folders")
                return candidate
        raise HTTPException(403, f"{text}: not inside a folder this server allows")

    def make_job(request: Request, file: UploadFile | None, path: str | None, model: str, outscale: float | None,
                 alpha: str) -> Job:
        from superres.io import IMAGE_EXTENSIONS, check_image
        from superres.io.video import VIDEO_EXTENSIONS

        if (file is None) == (not path):
            raise HTTPException(400, "give either an uploaded file (field 'file') or a server-side 'path'")
        if outscale is not None and not 0 < outscale <= MAX_OUTSCALE:
            raise HTTPException(400, f"outscale must be in (0, {MAX_OUTSCALE}], got {outscale:g}")
        jobs = queue_of(request)
        job_id, folder = jobs.new_folder()
        try:
            if file is not None:
                name = safe_name(file.filename)
                ext = Path(name).suffix.lower()
                source = folder / ("input" + (ext if ext in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS else ""))
                with source.open("wb") as out:
                    shutil.copyfileobj(file.file, out, 1 << 20)
            else:
                source = server_path(path)
                name, ext = safe_name(source.name), source.suffix.lower()
            kind = "video" if ext in VIDEO_EXTENSIONS else "image"
            check_model(model, kind)
            try:
                if kind == "image":
                    _, width, height = check_image(source, config.max_pixels)
                else:
                    from superres.io.video import probe

                    info = probe(source)
                    width, height = info.width, info.height
            except (SuperresError, ValueError) as e:
                raise HTTPException(400, one_line(e).replace(str(source), name)) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return Job(id=job_id, name=name, kind=kind, model=model, source=source, folder=folder, outscale=outscale,
                   alpha=alpha, width=width, height=height)

    from superres.zoo import DEFAULT_MODEL

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/v1/models", summary="The models this server runs: name, scale, purpose, size, availability")
    def models():
        return model_list()

    @app.post("/v1/jobs", status_code=202, summary="Queue a job: an uploaded image or video, or a server-side path")
    def submit(request: Request, file: Annotated[UploadFile | None, File()] = None,
               path: Annotated[str | None, Form()] = None, model: Annotated[str, Form()] = DEFAULT_MODEL,
               outscale: Annotated[float | None, Form()] = None, alpha: Annotated[Alpha, Form()] = "model"):
        job = make_job(request, file, path, model, outscale, alpha)
        return queue_of(request).submit(job).public()

    @app.get("/v1/jobs", summary="All jobs the server keeps, oldest first")
    def list_jobs(request: Request):
        return [job.public() for job in queue_of(request).jobs()]

    @app.get("/v1/jobs/{job_id}", summary="A job's status and progress")
    def get_job(request: Request, job_id: str):
        return job_of(request, job_id).public()

    @app.get("/v1/jobs/{job_id}/result", summary="Download a finished job's result")
    def result(request: Request, job_id: str):
        job = job_of(request, job_id)
        if job.status != "done" or job.result is None:
            raise HTTPException(409, f"job {job_id} is {job.status}, not done")
        return FileResponse(job.result, media_type=_MEDIA.get(job.result.suffix), filename=job.result_name)

    @app.get("/v1/jobs/{job_id}/input", summary="The job's input image as PNG (once the job has started)")
    def input_preview(request: Request, job_id: str):
        job = job_of(request, job_id)
        if job.preview is None or not job.preview.is_file():
            raise HTTPException(409, f"job {job_id} has no input preview (a video, or not started)")
        return FileResponse(job.preview, media_type="image/png")

    @app.post("/v1/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
    def cancel(request: Request, job_id: str):
        job_of(request, job_id)
        return queue_of(request).cancel(job_id).public()

    @app.delete("/v1/jobs/{job_id}", status_code=204, summary="Cancel a job and delete its files")
    def delete(request: Request, job_id: str):
        job_of(request, job_id)
        queue_of(request).delete(job_id)
        return Response(status_code=204)

    @app.get("/v1/events", summary="Server-sent events: each job's status as it changes (?job=ID: one job)")
    async def events(request: Request, job: str | None = None):
        jobs = queue_of(request)
        if job is not None:
            job_of(request, job)

        async def stream():
            since, idle = 0, 0.0
            yield "retry: 1000\n\n"
            while True:
                if jobs.version != since:
                    since, changed = jobs.changes(since)
                    for state in changed:
                        if job is None or state["id"] == job:
                            yield f"data: {json.dumps(state)}\n\n"
                            if job is not None and state["status"] in TERMINAL:
                                return
                    idle = 0.0
                elif idle > 15:
                    yield ": keep-alive\n\n"
                    idle = 0.0
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)
                idle += 0.1

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/upscale", summary="Upscale a small image and return it (multipart field 'file')",
              response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def upscale_now(request: Request, file: Annotated[UploadFile, File()],
                    model: Annotated[str, Form()] = DEFAULT_MODEL, outscale: Annotated[float | None, Form()] = None,
                    alpha: Annotated[Alpha, Form()] = "model"):
        job = make_job(request, file, None, model, outscale, alpha)
        jobs = queue_of(request)
        if job.kind != "image" or job.width * job.height > config.sync_max_pixels:
            shutil.rmtree(job.folder, ignore_errors=True)
            raise HTTPException(413, f"{job.name}: POST /v1/upscale takes images up to {config.sync_max_pixels} "
                                "pixels; use POST /v1/jobs for larger images and videos")
        jobs.submit(job)
        try:
            job.finished_event.wait()
            if job.status != "done":
                raise HTTPException(422, f"{job.name}: {job.error or job.status}")
            data = job.result.read_bytes()
        finally:
            jobs.delete(job.id)
        return Response(data, media_type=_MEDIA.get(job.result.suffix),
                        headers={"Content-Disposition": f'attachment; filename="{job.result_name}"'})

    return app


def _version() -> str:
    from superres import __version__

    return __version__


def check_bind(host: str, token: str | None, insecure_public: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless the operator says so explicitly."""
    if host in ("127.0.0.1", "localhost", "::1") or token or insecure_public:
        return
    raise SuperresError(f"--host {host} makes the server reachable from other machines: give --token SECRET "
                        "(checked on every request), or --insecure-public to serve without one")
