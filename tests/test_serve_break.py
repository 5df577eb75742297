"""`superres serve` under attack and abuse (issue 34): each test reproduces one finding of the break test
against the real app (FastAPI's test client, or uvicorn on 127.0.0.1, or a `superres serve` process with
real signals) and checks the answer is one 4xx line, or that the server keeps its promise."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx
from fastapi.testclient import TestClient
from test_serve import FAST, png_bytes, wait

from superres.io import write_image
from superres.serve import ServeConfig, create_app
from superres.serve.jobs import JobCancelledError, JobQueue


def tiny(h: int = 8, w: int = 8, value: int = 128) -> bytes:
    return png_bytes(np.full((h, w, 3), value, np.uint8))


def one_line(response, status: int | tuple[int, ...], limit: int = 400) -> str:
    """The response's detail, checked to be a single line of at most ``limit`` characters with the
    expected status."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < limit, detail[:500]
    assert "internal error" not in detail and "Traceback" not in response.text
    return detail


@pytest.fixture
def gate(monkeypatch):
    """Jobs for files named ``busy*`` hold the worker until ``release`` is set (or they are cancelled);
    ``ran`` lists the names of the jobs the worker started."""
    running, release, ran = threading.Event(), threading.Event(), []
    original = JobQueue._run

    def run(self, job):
        ran.append(job.name)
        if job.name.startswith("busy"):
            running.set()
            while not release.wait(0.01):
                if job.cancel_requested.is_set():
                    raise JobCancelledError
        return original(self, job)

    monkeypatch.setattr(JobQueue, "_run", run)
    yield running, release, ran
    release.set()


@contextlib.contextmanager
def live(app):
    """The app served by uvicorn on 127.0.0.1 (a free port) in a thread: yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- 1. DNS rebinding and cross-site requests --------------------------------------------------------


def test_foreign_host_and_cross_origin_requests_are_refused_without_a_token():
    with live(create_app(ServeConfig())) as url, httpx.Client(base_url=url, timeout=10) as c:
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            assert c.get("/v1/jobs", headers={"Host": host}).status_code == 200, host
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{int(port) + 1}",
                     f"127.0.0.1.attacker.example:{port}"):
            detail = one_line(c.get("/v1/jobs", headers={"Host": host}), 403)
            assert "host" in detail.lower() and "--token" in detail, detail
        assert c.get("/", headers={"Host": f"attacker.example:{port}"}).status_code == 403

        form = {"files": {"file": ("a.png", tiny())}, "data": {"model": "bicubic"}}
        for origin in ("http://evil.example", f"http://attacker.example:{port}", "null", f"http://localhost:{port}1"):
            detail = one_line(c.post("/v1/jobs", headers={"Origin": origin}, **form), 403)
            assert "origin" in detail.lower(), detail
            assert c.get("/v1/jobs", headers={"Origin": origin}).status_code == 403
        assert c.get("/v1/jobs").json() == []  # nothing was queued
        one_line(c.get("/v1/jobs", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}), 403)
        one_line(c.post("/v1/jobs", headers={"Sec-Fetch-Site": "cross-site"}, **form), 403)
        one_line(c.get("/v1/jobs", headers={"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"}), 403)
        # a link followed from another site opens the page (it cannot read it), and the page's own requests work
        assert c.get("/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}).status_code == 200
        for origin in (url, f"http://localhost:{port}"):
            host = origin.removeprefix("http://")
            r = c.post("/v1/jobs", headers={"Origin": origin, "Host": host, "Sec-Fetch-Site": "same-origin"}, **form)
            assert r.status_code == 202, r.text
        assert c.get("/static/app.js", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_a_token_server_answers_any_host_and_checks_cookie_requests_come_from_its_page():
    with live(create_app(ServeConfig(token="s3cret"))) as url, httpx.Client(base_url=url, timeout=10) as c:
        port = url.rsplit(":", 1)[1]
        auth = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/jobs", headers={**auth, "Host": f"myhost.example:{port}"}).status_code == 200
        assert c.get("/v1/jobs", headers={"Host": f"attacker.example:{port}"}).status_code == 401
        assert c.get("/v1/jobs", headers={"Origin": "http://evil.example"}).status_code == 401
        # the page's cookie comes with requests from any page of the site (another port of this machine too)
        assert c.get("/?token=s3cret").status_code == 200 and c.cookies.get("superres_token") == "s3cret"
        assert c.get("/v1/jobs", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
        detail = one_line(c.post("/v1/jobs", files={"file": ("a.png", tiny())}, data={"model": "bicubic"},
                                 headers={"Sec-Fetch-Site": "same-site"}), 403)
        assert "same-site" in detail
        assert c.get("/v1/jobs").json() == []
        explicit = c.get("/v1/jobs", headers={**auth, "Sec-Fetch-Site": "cross-site"})  # a client that knows it
        assert explicit.status_code == 200


def test_test_client_and_embedded_apps_keep_working():
    with TestClient(create_app(ServeConfig())) as c:  # Host: testserver, the address it "listens" on
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/models", headers={"Host": "evil.example"}).status_code == 403
        assert c.get("/v1/models", headers={"Origin": "http://evil.example"}).status_code == 403
        assert c.get("/v1/models", headers={"Origin": "http://testserver"}).status_code == 200


# --- 2. a path checked at submit is the file the job reads -----------------------------------------------


@pytest.mark.parametrize("how", ["hard link", "copy"])
def test_path_swapped_for_a_link_after_submit_is_not_followed(tmp_path, gate, monkeypatch, how):
    running, release, _ = gate
    if how == "copy":  # as when the allowed folder is on another file system than the server's temporary one
        def cross_device(*args, **kwargs):
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", cross_device)
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    write_image(allowed / "ok2.png", np.full((8, 8, 3), 0.2, np.float32))
    write_image(outside / "secret.png", np.full((12, 12, 3), 0.9, np.float32))
    with TestClient(create_app(ServeConfig(allow_dirs=(allowed,)))) as c:
        busy = c.post("/v1/jobs", files={"file": ("busy.png", tiny())}, data={"model": "bicubic"}).json()
        assert running.wait(20)
        r = c.post("/v1/jobs", data={"path": "ok2.png", "model": "bicubic", "outscale": "2"})
        assert r.status_code == 202, r.text
        taken = c.app.state.workdir / r.json()["id"] / "input.png"
        assert taken.samefile(allowed / "ok2.png") == (how == "hard link")
        (allowed / "ok2.png").unlink()
        (allowed / "ok2.png").symlink_to(outside / "secret.png")  # the swap, while the job waits
        release.set()
        assert wait(c, busy["id"])["status"] == "done"
        state = wait(c, r.json()["id"])
        assert state["status"] == "done" and (state["out_width"], state["out_height"]) == (16, 16), state
        out = cv2.imdecode(np.frombuffer(c.get(f"/v1/jobs/{state['id']}/result").content, np.uint8), 1)
        assert out.shape == (16, 16, 3) and abs(int(out.mean()) - 51) <= 1  # ok2's grey, not the secret's
        assert (outside / "secret.png").is_file() and (allowed / "ok2.png").is_symlink()  # nothing removed


# --- 6. the upload folder of a killed server is removed by the next one ----------------------------------


def test_a_killed_servers_folder_is_removed_at_the_next_start_and_a_live_ones_kept(tmp_path):
    script = ("import sys, time\n"
              "from fastapi.testclient import TestClient\n"
              "from superres.serve import ServeConfig, create_app\n"
              "app = create_app(ServeConfig(workdir=__import__('pathlib').Path(sys.argv[1])))\n"
              "with TestClient(app):\n"
              "    (app.state.workdir / 'upload.bin').write_bytes(b'x' * 1000)\n"
              "    print(app.state.workdir, flush=True)\n"
              "    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        killed = Path(proc.stdout.readline().strip())
        assert killed.is_dir() and killed.parent == tmp_path
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert killed.is_dir()  # SIGKILL: nothing cleaned up
    unrelated = tmp_path / "superres-serve-notes"  # not named as a server names its folder
    unrelated.mkdir()
    with TestClient(create_app(ServeConfig(workdir=tmp_path))) as first:
        live_folder = first.app.state.workdir
        assert not killed.exists()
        with TestClient(create_app(ServeConfig(workdir=tmp_path))) as second:
            assert live_folder.is_dir() and second.app.state.workdir.is_dir()  # a live server's folder stays
            assert first.get("/v1/models").status_code == 200
        assert live_folder.is_dir()
    assert unrelated.is_dir() and not live_folder.exists()


# --- 7. SIGTERM with a job running and a sync request waiting ---------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_exits_in_seconds_and_answers_the_waiting_client(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "superres", "serve", "--port", str(port), "--tile", "48",
                             "--device", "cpu"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.monotonic() + 90
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if c.get("/v1/models").status_code == 200:
                        break
                assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
                time.sleep(0.1)
            noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~100 tiles
            slow = c.post("/v1/jobs", files={"file": ("slow.png", png_bytes(noise))}, data={"model": FAST}).json()
            while (state := c.get(f"/v1/jobs/{slow['id']}").json())["done"] < 1:  # the model is loaded
                assert time.monotonic() < deadline and state["status"] in ("queued", "running"), state
                time.sleep(0.05)
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(httpx.post, f"{url}/v1/upscale", files={"file": ("a.png", tiny())},
                                      data={"model": "bicubic"}, timeout=60)
                while len(c.get("/v1/jobs").json()) < 2:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                proc.send_signal(signal.SIGTERM)
                start = time.monotonic()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    raise AssertionError("the server was still running 15 s after SIGTERM") from None
                took = time.monotonic() - start
                answer = waiting.result(10)
        assert took < 8, f"{took:.1f} s to exit"  # measured: about 2 s
        assert "shutting down" in one_line(answer, 503)
        assert not list(tmp_path.glob("superres-serve-*"))  # its folder went with it
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- 8. abandoned sync requests, and a bound on the waiting ones -------------------------------------------


def test_a_sync_job_is_cancelled_when_its_client_goes_away(gate):
    running, release, ran = gate
    with live(create_app(ServeConfig())) as url, httpx.Client(base_url=url, timeout=10) as c:
        busy = c.post("/v1/jobs", files={"file": ("busy.png", tiny())}, data={"model": "bicubic"}).json()
        assert running.wait(20)

        def give_up(i: int):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/v1/upscale", files={"file": (f"gone{i}.png", tiny())},
                           data={"model": "bicubic"}, timeout=1.5)

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(give_up, range(3)))
        deadline = time.monotonic() + 5
        while [j["name"] for j in c.get("/v1/jobs").json()] != ["busy.png"]:
            assert time.monotonic() < deadline, c.get("/v1/jobs").json()
            time.sleep(0.05)
        release.set()
        assert wait(c, busy["id"])["status"] == "done"
        r = c.post("/v1/upscale", files={"file": ("after.png", tiny())}, data={"model": "bicubic"})
        assert r.status_code == 200
        assert ran == ["busy.png", "after.png"]  # the abandoned jobs never ran


def test_waiting_sync_requests_are_bounded_and_hold_no_threads(gate):
    running, release, _ = gate
    assert ServeConfig().sync_max_waiting >= 8
    with live(create_app(ServeConfig(sync_max_waiting=45))) as url, httpx.Client(base_url=url, timeout=10) as c:
        c.post("/v1/jobs", files={"file": ("busy.png", tiny())}, data={"model": "bicubic"})
        assert running.wait(20)
        with ThreadPoolExecutor(46) as pool, contextlib.ExitStack() as stack:
            stack.callback(release.set)  # whatever fails, the waiting requests finish before the pool is left
            waiting = [pool.submit(httpx.post, f"{url}/v1/upscale", files={"file": (f"w{i}.png", tiny())},
                                   data={"model": "bicubic"}, timeout=60) for i in range(45)]
            deadline = time.monotonic() + 20
            while len(c.get("/v1/jobs").json()) < 46:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            start = time.monotonic()
            assert c.get("/v1/models", timeout=3).status_code == 200  # threads are not all held
            assert time.monotonic() - start < 2
            detail = one_line(c.post("/v1/upscale", files={"file": ("over.png", tiny())},
                                     data={"model": "bicubic"}), 429)
            assert "45" in detail and "/v1/jobs" in detail
            release.set()
            assert all(f.result(60).status_code == 200 for f in waiting)
        again = c.post("/v1/upscale", files={"file": ("again.png", tiny())}, data={"model": "bicubic"})
        assert again.status_code == 200


# --- 9. a lower pixel limit in the server ------------------------------------------------------------------


def _zeros_png(width: int, height: int) -> bytes:
    """A real gray PNG of zeros, a few hundred KB however large: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_the_server_refuses_huge_images_before_decoding(tmp_path):
    bomb = _zeros_png(13000, 13000)
    assert len(bomb) < 400_000
    (tmp_path / "bomb.png").write_bytes(bomb)
    assert ServeConfig().max_pixels <= 64_000_000
    with TestClient(create_app(ServeConfig(allow_dirs=(tmp_path,)))) as c:
        for how in ({"files": {"file": ("bomb.png", bomb)}}, {}):
            start = time.monotonic()
            fields = {"model": "bicubic", "outscale": "0.05", **({} if how else {"path": "bomb.png"})}
            detail = one_line(c.post("/v1/jobs", data=fields, **how), 400)
            assert "13000x13000, over the limit" in detail and time.monotonic() - start < 2
        one_line(c.post("/v1/upscale", files={"file": ("bomb.png", bomb)}, data={"model": "bicubic"}), (400, 413))


# --- 10. odd paths and scales: one 4xx line, not "internal error" -------------------------------------------


@pytest.mark.parametrize("path", ["loop.png", "a\0b.png", "n" * 300 + ".png", "/".join(["abcdefghij"] * 545)],
                         ids=["symlink-loop", "nul", "long-name", "long-path"])
def test_odd_paths_get_one_4xx_line(tmp_path, path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    with TestClient(create_app(ServeConfig(allow_dirs=(tmp_path,))), raise_server_exceptions=False) as c:
        r = c.post("/v1/jobs", data={"path": path, "model": "bicubic"})
        assert 400 <= r.status_code < 500
        one_line(r, r.status_code)


def test_a_vanishing_outscale_is_refused_by_both_endpoints_alike():
    with TestClient(create_app(ServeConfig()), raise_server_exceptions=False) as c:
        for endpoint in ("/v1/jobs", "/v1/upscale"):
            r = c.post(endpoint, files={"file": ("a.png", tiny())}, data={"model": "bicubic", "outscale": "1e-320"})
            assert "outscale" in one_line(r, 400), endpoint
        assert c.get("/v1/jobs").json() == []


# --- 11. EXIF orientation in the job's sizes and result name -------------------------------------------------


def test_exif_rotated_jpeg_reports_its_upright_size(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 40), (200, 100, 50)).save(tmp_path / "exif6.jpg", exif=exif.tobytes())
    with TestClient(create_app(ServeConfig())) as c:
        r = c.post("/v1/jobs", files={"file": ("exif6.jpg", (tmp_path / "exif6.jpg").read_bytes())},
                   data={"model": FAST})
        assert r.status_code == 202 and (r.json()["width"], r.json()["height"]) == (40, 60), r.json()
        state = wait(c, r.json()["id"])
        assert (state["width"], state["height"], state["out_width"], state["out_height"]) == (40, 60, 160, 240)
        assert state["result_name"] == "exif6_x4.jpg"


# --- 16. command-line values that used to give tracebacks ---------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--max-upload-mb", "inf"], "--max-upload-mb"),
    (["--max-upload-mb", "nan"], "--max-upload-mb"),
    (["--max-upload-mb", "0"], "--max-upload-mb"),
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--max-waiting", "-1"], "--max-waiting"),
    (["--max-pixels", "0"], "--max-pixels"),
])
def test_bad_serve_arguments_get_one_line(capsys, argv, message):
    from superres.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"superres serve: error: argument {message}"), err
    assert "Traceback" not in err


# --- 17. minor: echoed values, repeated fields, videos on the sync endpoint ---------------------------------


def test_a_huge_model_value_is_not_echoed_whole():
    with TestClient(create_app(ServeConfig())) as c:
        r = c.post("/v1/jobs", files={"file": ("a.png", tiny())}, data={"model": "m" * 900_000})
        detail = one_line(r, 400, limit=3000)  # the list of the models it could have been stays
        assert detail.startswith("unknown model 'mmm") and "m" * 100 not in detail


def test_two_file_parts_are_refused():
    with TestClient(create_app(ServeConfig())) as c:
        for endpoint in ("/v1/jobs", "/v1/upscale"):
            r = c.post(endpoint, files=[("file", ("a.png", tiny(8, 8))), ("file", ("b.png", tiny(16, 16)))],
                       data={"model": "bicubic"})
            assert "'file'" in one_line(r, 400), endpoint
        assert c.get("/v1/jobs").json() == []


def test_a_video_on_the_sync_endpoint_is_pointed_to_jobs(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((24, 32, 3), i * 40, np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    with TestClient(create_app(ServeConfig())) as c:
        r = c.post("/v1/upscale", files={"file": ("clip.mp4", path.read_bytes())}, data={"model": "bicubic"})
        detail = one_line(r, 415)
        assert detail.startswith("clip.mp4: ") and "POST /v1/jobs" in detail
