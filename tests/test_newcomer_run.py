"""What a newcomer met running things (issue 35, items 4, 6 and 7): progress and cancellation within one
network pass (the web app on one large image, the CLI's bar), one flag name and one default per concept,
a Ctrl-C that is not an error, and progress that stays readable in a log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from superres.cli import common, main
from superres.infer import Upscaler
from superres.io import write_image
from superres.runner import progress_scope
from superres.runtime import RunOptions

FAST = "realesr-animevideov3"  # the small real model: 18 convolutions, 0.6 M parameters


def report_every_layer(monkeypatch) -> None:
    """Progress reported after every layer, and the CLI's bars redrawn on every update, not at most every 0.1 s:
    on a fast CPU (bf16 on an Intel Xeon with AMX) a whole pass of these images takes about 0.13 s, of which
    the default intervals show nothing between its start and its end."""
    from superres.cli import upscale

    monkeypatch.setattr(progress_scope.__wrapped__, "__defaults__", (0.0,))
    made = upscale.progress_bar

    def progress_bar(*args, **kwargs):
        bar = made(*args, **kwargs)
        bar.mininterval = 0
        return bar

    monkeypatch.setattr(upscale, "progress_bar", progress_bar)


def photo(photos, width: int, height: int) -> np.ndarray:
    """A real photo (the astronaut) resized to width x height, uint8 RGB."""
    return cv2.resize(np.rint(photos["astronaut"] * 255).astype(np.uint8), (width, height),
                      interpolation=cv2.INTER_AREA)


# --- the runner: progress within a pass ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "ncnn"])
def test_a_pass_reports_its_progress_and_gives_the_same_output(photos, backend):
    upscaler = Upscaler(FAST, device="cpu", precision="fp32", backend=backend, tile=0)
    x = photo(photos, 96, 64).astype(np.float32) / 255
    plain = upscaler.runner.forward(x, "fp32", backend)
    seen: list[float] = []
    with progress_scope(seen.append, every=0):
        scoped = upscaler.runner.forward(x, "fp32", backend)
        upscaler.runner.forward(x, "fp32", backend)
    np.testing.assert_array_equal(scoped, plain)
    assert seen == sorted(seen) and seen[-1] == 2  # two passes, counted within each
    within = [s for s in seen if 0 < s < 1]
    assert len(within) >= 3, seen  # layer by layer (ncnn: a few layers, see NcnnRunner), not one jump per pass
    if backend == "torch":
        net = upscaler.runner._net("fp32", "torch")
        assert not any(m._forward_hooks for m in net.modules())  # nothing left behind: no cost outside a scope


def test_a_raising_report_stops_the_pass(photos):
    """A cancelled job's callback raises: the pass stops at the next layer, not at its end."""
    upscaler = Upscaler(FAST, device="cpu", precision="fp32", backend="torch", tile=0)
    x = photo(photos, 64, 48).astype(np.float32) / 255
    calls = []

    def cancel_at_a_third(passes: float) -> None:
        calls.append(passes)
        if passes > 0.3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), progress_scope(cancel_at_a_third, every=0):
        upscaler.runner.forward(x, "fp32", "torch")
    assert 0.3 < calls[-1] < 0.5


# --- the web app: progress and cancellation of a one-pass job -----------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array[..., ::-1]))
    assert ok
    return buf.tobytes()


def app(backend: str):
    """The real app (lifespan and worker thread included) in a test client. On the CPU whatever the machine:
    a pass long enough to watch; ncnn runs fp32 only."""
    pytest.importorskip("httpx")
    testclient = pytest.importorskip("fastapi.testclient")
    from superres.serve import ServeConfig, create_app

    options = RunOptions(device="cpu", backend=backend, tile=0, precision="fp32" if backend == "ncnn" else "auto")
    return testclient.TestClient(create_app(ServeConfig(options=options)))


def follow(client, job_id: str, until: tuple[str, ...] = ("done", "failed", "cancelled"), timeout: float = 120):
    """Poll a job until its status is one of ``until``: (its last state, the progress values seen while running,
    the seconds it was seen running)."""
    url, deadline = f"/v1/jobs/{job_id}", time.monotonic() + timeout
    seen, running_since = [], None
    while (state := client.get(url).json())["status"] not in until:
        assert time.monotonic() < deadline, state
        if state["status"] == "running":
            running_since = running_since or time.monotonic()
            seen.append(state["progress"])
        time.sleep(0.01)
    return state, seen, time.monotonic() - (running_since or time.monotonic())


@pytest.mark.parametrize("backend", ["torch", "ncnn"])
def test_a_one_pass_job_reports_progress_and_stops_soon_when_cancelled(photos, backend, monkeypatch):
    """Issue 35: a whole-image (640x424) job stayed at progress 0.0 for its whole run, then jumped to done; and
    POST .../cancel answered 200 but the job ran on to the end of its pass."""
    report_every_layer(monkeypatch)
    image = png_bytes(photo(photos, 480, 320))
    with app(backend) as client:
        job = client.post("/v1/jobs", files={"file": ("photo.png", image)}, data={"model": FAST}).json()
        state, seen, took = follow(client, job["id"])
        assert state["status"] == "done" and state["progress"] == 1.0, state
        assert seen == sorted(seen)
        assert sum(0 < p < 1 for p in set(seen)) >= 3, f"progress seen while running: {sorted(set(seen))}"

        job = client.post("/v1/jobs", files={"file": ("photo.png", image)}, data={"model": FAST}).json()
        follow(client, job["id"], until=("running",))
        started = time.monotonic()
        while client.get(f"/v1/jobs/{job['id']}").json()["progress"] == 0 and time.monotonic() - started < took / 5:
            time.sleep(0.01)  # into the pass
        asked = time.monotonic()
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        state, _, _ = follow(client, job["id"])
        stopped = time.monotonic() - asked
    assert state["status"] == "cancelled", state
    assert stopped < min(2.0, took / 4), f"cancelled {stopped:.2f} s after asking, in a job of {took:.2f} s"


def test_jobs_without_a_model_get_the_cli_defaults(tmp_path, photos):
    """Issue 35: `superres video` defaults to realesr-animevideov3, a video job on the server did not."""
    av = pytest.importorskip("av")
    from superres.infer.video import DEFAULT_VIDEO_MODEL
    from superres.zoo import DEFAULT_MODEL

    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(photo(photos, 32 + i, 24)[:, :32], format="rgb24")))
        out.mux(stream.encode(None))
    with app("auto") as client:
        video = client.post("/v1/jobs", files={"file": ("clip.mp4", clip.read_bytes())}).json()
        image = client.post("/v1/jobs", files={"file": ("photo.png", png_bytes(photo(photos, 32, 24)))}).json()
        client.post(f"/v1/jobs/{image['id']}/cancel")  # queued behind the video: it never loads its model
        assert (video["model"], image["model"]) == (DEFAULT_VIDEO_MODEL, DEFAULT_MODEL)
        models = {m["name"]: m for m in client.get("/v1/models").json()}
        assert models[DEFAULT_VIDEO_MODEL]["video_default"] and models[DEFAULT_MODEL]["default"]
        deadline = time.monotonic() + 60
        while (state := client.get(f"/v1/jobs/{video['id']}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert state["status"] == "done", state
    # the command line's default is the same constant
    from superres.cli import build_parser

    video_parser = build_parser()._subparsers._group_actions[0].choices["video"]
    assert DEFAULT_VIDEO_MODEL in video_parser.format_help().replace("\n", " ").replace("  ", " ")


# --- the CLI: one large image, logs, Ctrl-C, flag names -----------------------------------------------------


def plain_every(monkeypatch, seconds: float) -> None:
    monkeypatch.setattr(common, "PLAIN_EVERY", seconds)
    monkeypatch.setattr(common._PlainLines, "last_line", -float("inf"))


def test_one_large_image_shows_progress_within_it(tmp_path, photos, capsys, monkeypatch):
    """Issue 35: the bar on one large image showed only 0/1 until it was done."""
    src = tmp_path / "photo.png"
    write_image(src, photo(photos, 320, 240))
    plain_every(monkeypatch, 0)  # every redraw a line, to read them
    report_every_layer(monkeypatch)
    assert main(["upscale", str(src), "-o", str(tmp_path / "out.png"), "-m", FAST, "--tile", "0",
                 "--device", "cpu", "--backend", "torch"]) == 0
    err = capsys.readouterr().err
    shares = [int(s) for s in re.findall(r"photo\.png: (\d+)%", err)]
    assert any(0 < s < 100 for s in shares), err
    assert "0/1" not in err


def test_without_a_terminal_progress_is_a_few_plain_lines(tmp_path, photos, capsys, monkeypatch):
    """Issue 35: bars redrawn with carriage returns pile up as repeated lines in logs and CI."""
    (tmp_path / "in").mkdir()
    for i in range(6):
        write_image(tmp_path / "in" / f"{i}.png", photo(photos, 24 + i, 16))
    plain_every(monkeypatch, 30)
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", FAST, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    bar_lines = [line for line in err.splitlines() if "/6 img" in line]
    assert 1 <= len(bar_lines) <= 2, err  # the start and the end: nothing in between took 30 s
    assert bar_lines[-1].startswith("100% 6/6 img")
    assert err.count(" -> ") == 6


def test_ctrl_c_is_said_as_what_happened_not_as_an_error(tmp_path, photos):
    """Issue 35: a clean Ctrl-C ended with "superres: error: interrupted". A real SIGINT, mid-image."""
    src = tmp_path / "big.png"
    write_image(src, photo(photos, 1280, 848))
    out = tmp_path / "out.png"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "superres", "upscale", str(src), "-o", str(out), "-m", FAST,
                             "--tile", "0", "--device", "cpu", "--backend", "torch"],
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    try:
        for line in proc.stderr:  # the image's bar starts: the network is running
            lines.append(line)
            if line.startswith("big.png: "):
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        code = proc.wait(60)
    finally:
        proc.kill()
    err = "".join(lines) + rest
    assert code == 130, err
    assert "superres: stopped by Ctrl-C" in err and "error" not in err and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.png*"))


def test_degrade_and_eval_name_the_degradation_alike(tmp_path, photos, capsys):
    """Issue 35: `degrade --kind bd` against `eval --degradation bd`: one name, the old one still accepted."""
    hr = tmp_path / "hr"
    hr.mkdir()
    write_image(hr / "a.png", photo(photos, 48, 32))
    assert main(["degrade", str(hr), str(tmp_path / "new"), "--scale", "4", "--degradation", "bd", "-q"]) == 0
    assert main(["degrade", str(hr), str(tmp_path / "old"), "--scale", "4", "--kind", "bd", "-q"]) == 0
    assert main(["degrade", str(hr), str(tmp_path / "bicubic"), "--scale", "4", "-q"]) == 0
    new, old, bicubic = ((tmp_path / d / "a.png").read_bytes() for d in ("new", "old", "bicubic"))
    assert new == old != bicubic
    assert main(["eval", str(hr), "-m", "bicubic", "--scale", "4", "--degradation", "bd"]) == 0
    capsys.readouterr()
    from superres.cli import build_parser

    parsers = build_parser()._subparsers._group_actions[0].choices
    degrade_help, eval_help = parsers["degrade"].format_help(), parsers["eval"].format_help()
    assert "--degradation {bicubic,bd}" in degrade_help and "--degradation {bicubic,bd}" in eval_help
    assert "--kind" not in degrade_help


@pytest.mark.filterwarnings("ignore:--tile")  # small tiles, to have several
def test_an_image_makes_the_passes_it_is_expected_to(photos):
    """What the server and the CLI divide by: one pass per tile, twice with an alpha channel."""
    x = photo(photos, 100, 60)
    rgba = np.dstack([x, np.full(x.shape[:2], 200, np.uint8)])
    whole = Upscaler(FAST, device="cpu", precision="fp32", backend="torch", tile=0)
    tiled = Upscaler(FAST, device="cpu", precision="fp32", backend="torch", tile=64)
    for upscaler, image, passes in ((whole, x, 1), (whole, rgba, 2), (tiled, x, 3)):
        seen: list[float] = []
        with progress_scope(seen.append, every=0):
            upscaler.upscale_array(image)
        assert seen[-1] == upscaler.passes(image) == passes
    assert Upscaler("bicubic").passes(x) == 0
