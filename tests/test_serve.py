"""`superres serve`: the REST API against the real app (FastAPI's test client runs it in-process, lifespan
and worker thread included): results equal `superres upscale`'s, bad uploads are refused with one line,
and the safety rules (size limits, tokens, paths, no stack traces, cleaned temporary files) hold."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from superres.errors import ImageError, SuperresError
from superres.io import write_image
from superres.runtime import RunOptions
from superres.serve import ServeConfig, check_bind, create_app

FAST = "realesr-animevideov3"


def png_bytes(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array[..., ::-1]))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def crop(photos) -> np.ndarray:
    """A 32x32 uint8 RGB crop of a real photo (the cat's face)."""
    return np.rint(photos["chelsea"][100:132, 200:232] * 255).astype(np.uint8)


@pytest.fixture
def client():
    with TestClient(create_app(ServeConfig())) as c:
        yield c


def wait(client: TestClient, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/v1/jobs/{job_id}").json()
        if state["status"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {state}")


def submit(client: TestClient, data: bytes, name: str = "photo.png", **fields) -> dict:
    response = client.post("/v1/jobs", files={"file": (name, data, "image/png")},
                           data={"model": FAST, **{k: str(v) for k, v in fields.items()}})
    assert response.status_code == 202, response.text
    return response.json()


def test_models_listed_with_scale_purpose_and_size(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()}
    assert models[FAST]["scale"] == 4 and models[FAST]["params"] == 621_424 and models[FAST]["purpose"]
    assert models["realesrgan-x4plus"]["default"] and models["bicubic"]["available"]
    assert models["basicvsr-small-x4"]["video"] and not models[FAST]["video"]
    assert not any(name.startswith("rife-") for name in models)  # frame interpolation networks do not upscale


def test_openapi_documents_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/models", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result",
                 "/v1/jobs/{job_id}/cancel", "/v1/upscale", "/v1/events"):
        assert path in paths


def test_png_job_equals_superres_upscale(client, crop, tmp_path):
    from superres.cli import main

    src = tmp_path / "cat.png"
    src.write_bytes(png_bytes(crop))
    assert main(["upscale", str(src), "-o", str(tmp_path / "cli.png"), "-m", FAST, "--quiet"]) == 0
    expected = cv2.imread(str(tmp_path / "cli.png"), cv2.IMREAD_UNCHANGED)

    job = submit(client, src.read_bytes(), "cat.png")
    with client.stream("GET", f"/v1/events?job={job['id']}") as events:  # the stream ends with the job
        states = [line for line in events.iter_lines() if line.startswith("data:")]
    assert '"status": "done"' in states[-1]
    state = client.get(f"/v1/jobs/{job['id']}").json()
    assert (state["out_width"], state["out_height"]) == (128, 128) and state["progress"] == 1
    result = client.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert 'filename="cat_x4.png"' in result.headers["content-disposition"]
    got = cv2.imdecode(np.frombuffer(result.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert got.shape == (128, 128, 3)
    np.testing.assert_array_equal(got, expected)
    before = client.get(f"/v1/jobs/{job['id']}/input")
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(before.content, np.uint8), 1)[..., ::-1], crop)

    direct = client.post("/v1/upscale", files={"file": ("cat.png", src.read_bytes(), "image/png")},
                         data={"model": FAST})
    assert direct.status_code == 200 and direct.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(direct.content, np.uint8), cv2.IMREAD_UNCHANGED),
                                  expected)
    small = client.post("/v1/upscale", files={"file": ("cat.png", src.read_bytes())},
                        data={"model": "bicubic", "outscale": "2"})
    assert cv2.imdecode(np.frombuffer(small.content, np.uint8), 1).shape == (64, 64, 3)


def test_sync_endpoint_refuses_large_inputs():
    with TestClient(create_app(ServeConfig(sync_max_pixels=100))) as c:
        r = c.post("/v1/upscale", files={"file": ("big.png", png_bytes(np.zeros((16, 16, 3), np.uint8)))})
        assert r.status_code == 413 and "POST /v1/jobs" in r.json()["detail"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's header) with a tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("kind, data, message", [
    ("text file", b"this is not an image\n" * 10, "not an image file"),
    ("truncated PNG", None, "corrupt or truncated PNG"),
    ("30000x30000 header", _png_header_only(30000, 30000), "30000x30000, over the limit"),
    ("0 bytes", b"", "empty file (0 bytes)"),
], ids=["text", "truncated", "bomb-header", "empty"])
def test_bad_uploads_get_one_clear_4xx_and_the_server_keeps_serving(client, crop, kind, data, message):
    if data is None:
        good = png_bytes(crop)
        data = good[:len(good) // 2]
    r = client.post("/v1/jobs", files={"file": ("upload.png", data, "image/png")}, data={"model": FAST})
    assert 400 <= r.status_code < 500, r.text
    detail = r.json()["detail"]
    assert message in detail and detail.startswith("upload.png: ") and "\n" not in detail
    assert "/tmp" not in detail and "Traceback" not in r.text  # the client's name, not the server's path
    r = client.post("/v1/upscale", files={"file": ("upload.png", data)}, data={"model": FAST})
    assert 400 <= r.status_code < 500 and message in r.json()["detail"]
    assert client.get("/v1/models").status_code == 200
    assert wait(client, submit(client, png_bytes(crop))["id"])["status"] == "done"


@pytest.mark.parametrize("field, value, message", [
    ("model", "no-such-model", "unknown model 'no-such-model'"),
    ("model", "basicvsr-small-x4", "is a video network"),
    ("outscale", "0", "outscale must be in"),
    ("outscale", "abc", "outscale: "),
])
def test_bad_options_get_one_line(client, crop, field, value, message):
    r = client.post("/v1/jobs", files={"file": ("a.png", png_bytes(crop))}, data={"model": FAST, field: value})
    assert 400 <= r.status_code < 500 and message in r.json()["detail"], r.text


def test_upload_size_limit(crop):
    data = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert len(data) > 10_000
    with TestClient(create_app(ServeConfig(max_upload=10_000))) as c:
        r = c.post("/v1/jobs", files={"file": ("big.png", data)})
        assert r.status_code == 413 and "over this server's limit" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit holds while the body arrives
            yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
            for _ in range(20):
                yield b"\0" * 1000
            yield b"\r\n--x--\r\n"

        r = c.post("/v1/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413 and "over this server's limit" in r.json()["detail"]
        assert list(c.app.state.workdir.iterdir()) == []
        assert wait(c, submit(c, png_bytes(crop))["id"])["status"] == "done"


def test_token_is_checked_on_every_request(crop):
    with TestClient(create_app(ServeConfig(token="s3cret"))) as c:
        for path in ("/", "/v1/models", "/static/app.js", "/openapi.json", "/v1/jobs"):
            r = c.get(path)
            assert r.status_code == 401 and "token" in r.json()["detail"], path
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/jobs", files={"file": ("a.png", png_bytes(crop))}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"X-Token": "s3cret"}).status_code == 200
        page = c.get("/?token=s3cret")  # the page's address carries it once; its own requests use the cookie
        assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
        assert c.get("/static/app.js").status_code == 200


def test_binding_beyond_localhost_needs_a_token(capsys):
    check_bind("127.0.0.1", None, False)
    check_bind("0.0.0.0", "s3cret", False)
    check_bind("0.0.0.0", None, True)
    with pytest.raises(SuperresError, match="--token"):
        check_bind("0.0.0.0", None, False)
    from superres.cli import main

    assert main(["serve", "--host", "0.0.0.0"]) == 1
    assert "--insecure-public" in capsys.readouterr().err


def test_no_path_traversal(client, crop, tmp_path):
    job = submit(client, png_bytes(crop), "../../../../evil.png")
    assert job["name"] == "evil.png"
    assert wait(client, job["id"])["status"] == "done"
    workdir = client.app.state.workdir
    assert sorted(p.name for p in (workdir / job["id"]).iterdir()) == ["input.png", "preview.png", "result.png"]
    assert not (tmp_path.parents[3] / "evil.png").exists()
    assert 'filename="evil_x4.png"' in client.get(f"/v1/jobs/{job['id']}/result").headers["content-disposition"]
    for bad_id in ("..", "../..", "..%2F..%2Fetc"):
        assert client.get(f"/v1/jobs/{bad_id}/result").status_code == 404
    assert client.get("/static/../app.py").status_code == 404
    # server-side paths: refused without --allow-dir
    r = client.post("/v1/jobs", data={"path": str(tmp_path / "a.png"), "model": FAST})
    assert r.status_code == 403 and "--allow-dir" in r.json()["detail"]

    allowed, outside = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    outside.mkdir()
    write_image(allowed / "in.png", crop)
    write_image(outside / "secret.png", crop)
    (allowed / "link.png").symlink_to(outside / "secret.png")
    with TestClient(create_app(ServeConfig(allow_dirs=(allowed,)))) as c:
        for path in ("../secret/secret.png", str(outside / "secret.png"), "link.png", "sub/../../secret/secret.png"):
            r = c.post("/v1/jobs", data={"path": path, "model": FAST})
            assert r.status_code == 403 and "not inside a folder this server allows" in r.json()["detail"], path
        assert c.post("/v1/jobs", data={"path": "missing.png", "model": FAST}).status_code == 404
        r = c.post("/v1/jobs", data={"path": "in.png", "model": FAST})
        assert r.status_code == 202
        assert wait(c, r.json()["id"])["status"] == "done"
        c.delete(f"/v1/jobs/{r.json()['id']}")
    assert (allowed / "in.png").is_file()  # the operator's file stays


def test_no_stack_traces_in_responses(crop, monkeypatch):
    import superres.serve.app as app_module
    from superres.serve.jobs import JobQueue

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/x.py")

    with TestClient(create_app(ServeConfig()), raise_server_exceptions=False) as c:
        monkeypatch.setattr(JobQueue, "_run_image", boom)
        state = wait(c, submit(c, png_bytes(crop))["id"])
        assert state["status"] == "failed" and state["error"] == "internal error (see the server's log)"

        def bad_file(self, job):
            raise ImageError(f"{job.source}: 12-channel images are not supported")

        monkeypatch.setattr(JobQueue, "_run_image", bad_file)
        state = wait(c, submit(c, png_bytes(crop), "mine.png")["id"])
        assert state["error"] == "mine.png: 12-channel images are not supported"  # not the server's path
        monkeypatch.setattr(app_module, "model_list", boom)
        r = c.get("/v1/models")
        assert r.status_code == 500 and r.json() == {"detail": "internal error (see the server's log)"}
        assert "Traceback" not in r.text and "secret" not in r.text


def test_results_live_in_a_temporary_folder_that_is_cleaned(crop):
    app = create_app(ServeConfig())
    with TestClient(app) as c:
        first = submit(c, png_bytes(crop))
        assert wait(c, first["id"])["status"] == "done"
        second = submit(c, png_bytes(crop))
        assert (app.state.workdir / first["id"]).is_dir()
        assert c.delete(f"/v1/jobs/{first['id']}").status_code == 204
        assert not (app.state.workdir / first["id"]).exists()
        assert c.get(f"/v1/jobs/{first['id']}").status_code == 404
        workdir = app.state.workdir
    assert not workdir.exists()  # the server stopped: every input and result is gone
    assert second["id"]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_twenty_jobs_at_once_complete_in_order_with_flat_memory(photos):
    images = [png_bytes(np.rint(photos["astronaut"][i * 20:i * 20 + 24, 100:124] * 255).astype(np.uint8))
              for i in range(20)]
    with TestClient(create_app(ServeConfig())) as c:

        def batch() -> list[dict]:
            with concurrent.futures.ThreadPoolExecutor(20) as pool:
                submitted = list(pool.map(lambda data: submit(c, data), images))
            return [wait(c, job["id"]) for job in submitted]

        batch()  # loads the model, warms the allocator
        rss = _rss()
        for _ in range(2):
            ids = {s["id"] for s in batch()}
            by_arrival = [s for s in c.get("/v1/jobs").json() if s["id"] in ids]  # the queue's order
            assert len(by_arrival) == 20
            assert all(s["status"] == "done" and s["out_width"] == 96 for s in by_arrival)
            for a, b in itertools.pairwise(by_arrival):  # one at a time, first come first served
                assert a["finished"] <= b["started"]
        grown = _rss() - rss
        assert grown < 40 << 20, f"memory grew by {grown >> 20} MiB over 40 jobs"


def test_cancelling_a_running_job_frees_the_device(photos, crop):
    big = png_bytes(np.rint(photos["astronaut"] * 255).astype(np.uint8))  # 512x512 in 48-pixel tiles: ~200 tiles
    with TestClient(create_app(ServeConfig(options=RunOptions(tile=48)))) as c:
        slow = submit(c, big, "big.png")
        queued = submit(c, big, "queued.png")
        after = submit(c, png_bytes(crop), "after.png")
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{slow['id']}").json()["done"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # the queued job first: once the running one is cancelled, the worker may start the next at once
        assert c.post(f"/v1/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
        assert c.post(f"/v1/jobs/{slow['id']}/cancel").json()["status"] in ("running", "cancelled")
        cancelled = wait(c, slow["id"])
        assert cancelled["status"] == "cancelled" and cancelled["done"] < cancelled["total"]
        assert c.get(f"/v1/jobs/{slow['id']}/result").status_code == 409
        assert not list((c.app.state.workdir / slow["id"]).glob("result*"))
        done = wait(c, after["id"])
        assert done["status"] == "done" and done["started"] >= cancelled["finished"]
        assert c.get(f"/v1/jobs/{queued['id']}").json()["started"] is None


def test_video_job(tmp_path, photos):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(5):
            crop = np.rint(photos["chelsea"][i:i + 24, i:i + 32] * 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        out.mux(stream.encode(None))
    with TestClient(create_app(ServeConfig())) as c:
        r = c.post("/v1/jobs", files={"file": ("clip.mp4", path.read_bytes())}, data={"model": "bicubic",
                                                                                      "outscale": "2"})
        assert r.status_code == 202 and r.json()["kind"] == "video"
        state = wait(c, r.json()["id"])
        assert state["status"] == "done" and (state["out_width"], state["out_height"]) == (64, 48)
        assert state["done"] == 5
        result = c.get(f"/v1/jobs/{state['id']}/result")
        assert result.headers["content-type"] == "video/mp4" and len(result.content) > 100
        bad = c.post("/v1/jobs", files={"file": ("clip.mp4", b"not a video")}, data={"model": "bicubic"})
        assert bad.status_code == 400 and bad.json()["detail"].startswith("clip.mp4")


def test_importing_the_cli_does_not_import_the_server():
    code = "import sys, superres, superres.cli; print(sorted({'fastapi', 'uvicorn', 'starlette'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
