"""The web app: the page (static files shipped in the package, nothing from the network) and the REST API.

Every response is JSON ``{"detail": "one line"}`` on error; a stack trace goes to the server's log, never
to a client. Uploads are checked by the I/O layer (format, size in pixels, decodable data) before a job
is queued; files live in a temporary folder that the server removes when it stops (or the next server,
when it was killed). Without a token, only this server's own page may call it: requests naming another
host (DNS rebinding) or coming from another site's page are refused.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import shutil
import stat
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from superres.errors import SuperresError
from superres.runtime import RunOptions
from superres.serve.jobs import SHUTTING_DOWN, TERMINAL, Job, JobQueue, claim_workdir, one_line, safe_name

log = logging.getLogger("superres.serve")
STATIC = Path(__file__).parent / "static"
MAX_OUTSCALE = 16
Alpha = Literal["model", "bicubic"]
_COOKIE = "superres_token"
_MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".mp4": "video/mp4"}
# A server reads what strangers send: a lower bound than the CLI's 400 MP (an 8-bit RGB image of 50 MP
# decodes to 150 MB, and its float copy and output several times that).
SERVER_MAX_PIXELS = 50_000_000
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """How the server runs. ``token``: required on every request when set; ``allow_dirs``: folders whose
    files jobs may name by path; ``max_upload``: bytes per request; ``max_pixels``: the largest image (or
    video frame) accepted, checked from the header before any decoding (decompression-bomb guard);
    ``sync_max_pixels``: the largest input ``POST /v1/upscale`` answers directly; ``sync_max_waiting``: how
    many ``POST /v1/upscale`` requests may wait at once (429 beyond); ``workdir``: where the temporary
    folder is made (default: the system's)."""

    options: RunOptions = field(default_factory=RunOptions)
    token: str | None = None
    allow_dirs: tuple[Path, ...] = ()
    max_upload: int = 200 << 20
    max_pixels: int = SERVER_MAX_PIXELS
    sync_max_pixels: int = 1024 * 1024
    sync_max_waiting: int = 16
    workdir: Path | None = None
    keep: int = 200


class _Guard:
    """ASGI middleware: the token on every request (without one, the host and origin checks of
    :func:`_refusal`), and the upload size limit while the body arrives (a body over the limit gets 413
    whatever the route was doing with it)."""

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
            # a browser sends the cookie from any page of this site (another port of this machine too)
            if where == "cookie" and (refusal := _cross_site(scope, _headers(scope))):
                return await _send_error(send, 403, refusal)
        elif refusal := _refusal(scope):
            return await _send_error(send, 403, refusal)
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


def _refusal(scope) -> str | None:
    """Why a request to a server without a token is refused, or None. The token is what keeps other
    clients out; without one, the browser must not become a way in:

    - a ``Host`` that is not the address the request came to (and, on a loopback address, ``localhost``
      and the other loopback address) is a page that made its own name point here (DNS rebinding), or a
      proxy: refused, whatever it asks for;
    - an ``Origin`` other than those names, or ``Sec-Fetch-Site: cross-site`` / ``same-site`` (another
      port of this machine is "same-site"), is another page's script or form: refused, except a plain
      navigation (a link followed to the page, which the other page cannot read).

    With a token the token is the gate, and other names (a reverse proxy, a LAN host name) work; only
    requests that carry it in the page's cookie get the ``Sec-Fetch-Site`` check, as the cookie
    (``SameSite=Strict``) still comes with the requests of other pages of the same site."""
    headers = _headers(scope)
    server = scope.get("server")
    if not server or server[1] is None:  # a Unix socket: no browser reaches it by a name
        return _cross_site(scope, headers)
    own = {(name, server[1]) for name in _own_names(server[0])}
    default = 443 if scope.get("scheme") == "https" else 80
    host = headers.get("host")
    if host is not None and _authority(host, default) not in own:
        names = ", ".join(f"[{n}]:{p}" if ":" in n else f"{n}:{p}" for n, p in sorted(own))
        return (f"requests for host {_clip(host)!r} are refused: this server answers to {names} (a guard "
                "against DNS rebinding; start it with --token to serve other names)")
    origin = headers.get("origin")
    if origin is not None:
        scheme, sep, rest = origin.partition("://")
        if not sep or _authority(rest, 443 if scheme == "https" else 80) not in own:
            return (f"a cross-origin request from {_clip(origin)!r} is refused: without a token, only this "
                    "server's own page may call it")
    return _cross_site(scope, headers)


def _cross_site(scope, headers: dict[str, str]) -> str | None:
    """Why a request the browser marks as made by another site's page (or another port's) is refused,
    or None; a navigation (a link followed to the page, which the other page cannot read) is let in."""
    site = headers.get("sec-fetch-site")
    navigation = scope.get("method") in ("GET", "HEAD") and headers.get("sec-fetch-mode") == "navigate"
    if site in ("cross-site", "same-site") and not navigation:
        return f"a {site} request is refused: only this server's own page may call it"
    return None


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


def _own_names(address: str) -> set[str]:
    """The host names a request to ``address`` may give: the address, and every loopback name for a
    loopback address."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
        loopback = (getattr(ip, "ipv4_mapped", None) or ip).is_loopback
    except ValueError:
        loopback = address.lower() == "localhost"
    return {address.lower(), *(_LOOPBACK_NAMES if loopback else ())}


def _authority(text: str, default_port: int) -> tuple[str, int] | None:
    """(host, port) of a ``Host`` header or an origin's ``host[:port]``, or None if it is malformed."""
    text = text.strip().lower()
    if text.startswith("["):
        name, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = text.partition(":")
    if not port:
        return name, default_port
    return (name, int(port)) if port.isdigit() and len(port) <= 5 else None


def _clip(text: str, limit: int = 60) -> str:
    """A client's text as an error message shows it: at most ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


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


def default_model(kind: str) -> str:
    """The model a job of this kind (image or video) gets when it names none: the CLI's own defaults
    (``superres upscale``, ``superres video``)."""
    from superres.infer.video import DEFAULT_VIDEO_MODEL
    from superres.zoo import DEFAULT_MODEL

    return DEFAULT_VIDEO_MODEL if kind == "video" else DEFAULT_MODEL


def model_list() -> list[dict]:
    """The named models that upscale (with scale, purpose and size), then bicubic: not the frame interpolation
    networks, which make frames between frames. ``default``: the images' default model; ``video_default``: the
    videos'."""
    from superres.archs import REGISTRY
    from superres.zoo import MODELS, _full_kwargs
    from superres.zoo.pretrained import is_available

    def upscales(arch: str) -> bool:
        spec = REGISTRY.get(arch)
        return spec is None or spec.facts(_full_kwargs(spec.cls, {})).purpose != "interpolation"

    image, video = default_model("image"), default_model("video")
    rows = [{"name": name, "scale": spec.scale, "purpose": spec.purpose, "params": spec.params,
             "video": spec.video, "available": is_available(name), "default": name == image,
             "video_default": name == video}
            for name, spec in MODELS.items() if upscales(spec.arch)]
    rows.append({"name": "bicubic", "scale": None, "purpose": "MATLAB bicubic baseline, no network", "params": 0,
                 "video": False, "available": True, "default": False, "video_default": False})
    return rows


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application; its job queue starts and stops with the app's lifespan."""
    config = config or ServeConfig()
    allow_dirs = tuple(Path(d).resolve() for d in config.allow_dirs)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        workdir, lock = claim_workdir(config.workdir)
        app.state.jobs = JobQueue(config.options, workdir, max_pixels=config.max_pixels, keep=config.keep)
        app.state.workdir = workdir
        app.state.sync_waiting = 0
        try:
            yield
        finally:
            app.state.jobs.close()
            if lock is not None:
                os.close(lock)

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

    async def one_of_each(request: Request) -> None:
        """Each form field at most once: two files (or two models) are refused, not one silently dropped."""
        form = await request.form()  # the form FastAPI parsed already
        for key in dict.fromkeys(form.keys()):
            if (n := len(form.getlist(key))) > 1:
                raise HTTPException(400, f"field {_clip(key)!r} is given {n} times; send it once")

    def check_model(model: str, kind: str) -> None:
        rows = {m["name"]: m for m in model_list()}
        if model not in rows:
            raise HTTPException(400, f"unknown model {_clip(model)!r}; choose one of {', '.join(rows)}")
        if not rows[model]["available"]:
            raise HTTPException(400, f"model {model!r} is not installed on this server")
        if rows[model]["video"] and kind != "video":
            raise HTTPException(400, f"{model} is a video network: submit a video")

    def open_server_file(text: str) -> tuple[int, Path]:
        """(an open descriptor, the resolved path) of a regular file inside an --allow-dir folder, links
        resolved, or 400/403/404. The file is opened, without following a link, at the resolved path and
        then checked to be inside the folder, so a link swapped in after the check is never followed."""
        if not allow_dirs:
            raise HTTPException(403, "this server does not read server-side paths (start it with --allow-dir)")
        shown = _clip(text)
        if "\0" in text:
            raise HTTPException(400, f"{shown!r}: a path cannot hold a NUL character")
        for base in allow_dirs:
            try:
                candidate = (base / text).resolve()
            except (OSError, RuntimeError, ValueError) as e:  # a loop of links, a name or path too long
                raise HTTPException(400, f"{shown}: not a usable path ({_reason(e)})") from None
            if not candidate.is_relative_to(base):
                continue
            try:
                fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
            except (FileNotFoundError, NotADirectoryError):
                raise HTTPException(404, f"{shown}: no such file in the allowed folders") from None
            except (OSError, ValueError) as e:
                raise HTTPException(400, f"{shown}: cannot open it ({_reason(e)})") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise HTTPException(404, f"{shown}: no such file in the allowed folders")
                if not _opened_inside(fd, candidate, base):
                    raise HTTPException(403, f"{shown}: not inside a folder this server allows")
            except BaseException:
                os.close(fd)
                raise
            return fd, candidate
        raise HTTPException(403, f"{shown}: not inside a folder this server allows")

    def make_job(request: Request, file: UploadFile | None, path: str | None, model: str | None,
                 outscale: float | None, alpha: str) -> Job:
        from superres.io import IMAGE_EXTENSIONS, check_image
        from superres.io.video import VIDEO_EXTENSIONS

        if (file is None) == (not path):
            raise HTTPException(400, "give either an uploaded file (field 'file') or a server-side 'path'")
        if outscale is not None and not 0 < outscale <= MAX_OUTSCALE:
            raise HTTPException(400, f"outscale must be in (0, {MAX_OUTSCALE}], got {outscale:g}")
        jobs = queue_of(request)
        if jobs.stopping:
            raise HTTPException(503, SHUTTING_DOWN)
        job_id, folder = jobs.new_folder()
        known = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
        try:
            if file is not None:
                name = safe_name(file.filename)
                ext = Path(name).suffix.lower()
                source = folder / ("input" + (ext if ext in known else ""))
                with source.open("wb") as out:
                    shutil.copyfileobj(file.file, out, 1 << 20)
            else:  # the job reads its own link or copy of the file checked now, whatever the path names later
                fd, resolved = open_server_file(path)
                with os.fdopen(fd, "rb") as opened:
                    name, ext = safe_name(resolved.name), resolved.suffix.lower()
                    source = folder / ("input" + (ext if ext in known else ""))
                    _take(opened, resolved, source)
            kind = "video" if ext in VIDEO_EXTENSIONS else "image"
            model = model or default_model(kind)
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
            if kind == "video" and width * height > config.max_pixels:
                raise HTTPException(400, f"{name}: frames of {width}x{height}, over the limit of "
                                    f"{config.max_pixels} pixels")
            if outscale is not None and min(width, height) * outscale < 1:
                raise HTTPException(400, f"{name}: outscale {outscale:g} would make the {width}x{height} image "
                                    "smaller than one pixel")
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

    @app.post("/v1/jobs", status_code=202, summary="Queue a job: an uploaded image or video, or a server-side path",
              dependencies=[Depends(one_of_each)])
    def submit(request: Request, file: Annotated[UploadFile | None, File()] = None,
               path: Annotated[str | None, Form()] = None,
               model: Annotated[str | None, Form(description="default: the CLI's, by kind (GET /v1/models: "
                                                  "default, video_default)")] = None,
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
                if jobs.stopping or await request.is_disconnected():  # a stopping server waits for no stream
                    return
                await asyncio.sleep(0.1)
                idle += 0.1

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/upscale", summary="Upscale a small image and return it (multipart field 'file')",
              response_class=Response, responses={200: {"content": {"image/png": {}}}},
              dependencies=[Depends(one_of_each)])
    async def upscale_now(request: Request, file: Annotated[UploadFile, File()],
                          model: Annotated[str, Form()] = DEFAULT_MODEL,
                          outscale: Annotated[float | None, Form()] = None, alpha: Annotated[Alpha, Form()] = "model"):
        # async: a waiting request holds no thread (the pool's ~40 threads serve everything else)
        from superres.io.video import VIDEO_EXTENSIONS

        name = safe_name(file.filename)
        if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
            raise HTTPException(415, f"{name}: POST /v1/upscale takes images; use POST /v1/jobs for videos")
        if queue_of(request).stopping:
            raise HTTPException(503, SHUTTING_DOWN)
        state = request.app.state
        if state.sync_waiting >= config.sync_max_waiting:
            raise HTTPException(429, f"{config.sync_max_waiting} requests already wait for POST /v1/upscale: "
                                "retry later, or queue a job with POST /v1/jobs")
        state.sync_waiting += 1
        try:
            return await upscale_and_wait(request, file, model, outscale, alpha)
        finally:
            state.sync_waiting -= 1

    async def upscale_and_wait(request: Request, file: UploadFile, model: str, outscale: float | None,
                               alpha: str) -> Response:
        jobs = queue_of(request)
        job = await run_in_threadpool(make_job, request, file, None, model, outscale, alpha)
        if job.kind != "image" or job.width * job.height > config.sync_max_pixels:
            shutil.rmtree(job.folder, ignore_errors=True)
            raise HTTPException(413, f"{job.name}: POST /v1/upscale takes images up to {config.sync_max_pixels} "
                                "pixels; use POST /v1/jobs for larger images and videos")
        jobs.submit(job)
        try:
            while not job.finished_event.is_set() and not jobs.stopping:
                if await request.is_disconnected():  # nobody will read the result: free the device
                    jobs.cancel(job.id)
                    return Response(status_code=499)  # nginx's "client closed request", for the log only
                await asyncio.sleep(0.05)
            if job.status != "done":
                if jobs.stopping:
                    raise HTTPException(503, SHUTTING_DOWN)
                raise HTTPException(422, f"{job.name}: {job.error or job.status}")
            data = await run_in_threadpool(job.result.read_bytes)
        finally:
            jobs.delete(job.id)
        return Response(data, media_type=_MEDIA.get(job.result.suffix),
                        headers={"Content-Disposition": f'attachment; filename="{job.result_name}"'})

    return app


def _reason(e: BaseException) -> str:
    if isinstance(e, RuntimeError):  # pathlib before Python 3.13: "Symlink loop from ..."
        return "a loop of symbolic links"
    if isinstance(e, ValueError):
        return "not a valid path"
    return e.strerror or type(e).__name__


def _opened_inside(fd: int, path: Path, base: Path) -> bool:
    """Whether the open file ``fd``, opened at ``path`` (resolved inside ``base``), is inside ``base``: by
    the kernel's own name for it where there is one (Linux), else by being the file ``path`` names now."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}")).is_relative_to(base)
    except OSError:
        try:
            now, opened = os.stat(path, follow_symlinks=False), os.fstat(fd)
            return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino) and path.resolve() == path
        except (OSError, RuntimeError):
            return False


def _take(opened, path: Path, dest: Path) -> None:
    """The open file as ``dest``: a hard link where the file system allows (no copy, and the link holds
    the very file that was checked, whatever ``path`` names later), else a copy of its bytes."""
    try:
        os.link(path, dest)
        linked, here = os.stat(dest), os.fstat(opened.fileno())
        if (linked.st_dev, linked.st_ino) == (here.st_dev, here.st_ino):
            return
        dest.unlink()  # the path changed between the check and the link: copy what was checked
    except OSError:
        pass
    with dest.open("wb") as out:
        shutil.copyfileobj(opened, out, 1 << 20)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run ``app`` with uvicorn until SIGINT or SIGTERM. On the signal the job queue stops at once:
    queued jobs are cancelled, the running one stops at its next tile, and a client waiting on
    ``POST /v1/upscale`` is answered 503; so the process ends within seconds whatever was queued."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            jobs = getattr(app.state, "jobs", None)
            if jobs is not None:
                jobs.stop()
            await super().shutdown(sockets)

    Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)).run()


def _version() -> str:
    from superres import __version__

    return __version__


def check_bind(host: str, token: str | None, insecure_public: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless the operator says so explicitly."""
    if host in ("127.0.0.1", "localhost", "::1") or token or insecure_public:
        return
    raise SuperresError(f"--host {host} makes the server reachable from other machines: give --token SECRET "
                        "(checked on every request), or --insecure-public to serve without one")
