"""Break tests of the commands (issue 34): outputs that would replace their inputs, outputs read back as
inputs, temporary files left by killed runs, scale arguments, unwritable output folders, clashing output
names and inputs that are not regular files. Each error is one line naming the file, and nothing is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main
from PIL import Image

from superres.cli import main

BICUBIC = ("-m", "bicubic", "-s", "2", "-q")


def cli(*args) -> subprocess.CompletedProcess:
    """``superres ARGS``, in this process (see conftest.run_main): the same exit code, stdout and stderr."""
    return run_main(*args)


def cli_process(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """``superres ARGS`` in a process of its own, stopped after ``timeout`` seconds: for a run that, broken,
    would read an endless device (all the memory of this process) or never end."""
    return subprocess.run([sys.executable, "-m", "superres", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def one_error(err: str, *names) -> str:
    """The single ``superres: error:`` line of ``err`` (no traceback), which names each of ``names``."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("superres: error: ")]
    assert len(errors) == 1, err
    for name in names:
        assert str(name) in errors[0], err
    return errors[0]


def png(path: Path, size: tuple[int, int] = (12, 10), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def video(tmp_path) -> Path:
    av = pytest.importorskip("av")
    path = tmp_path / "a.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 60 * i, np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    return path


# --- 3. an output that is its input -----------------------------------------------------------------------


def test_video_refuses_to_replace_its_own_input(video, tmp_path, capsys, monkeypatch):
    before = video.read_bytes()
    result = cli("video", video, "-o", video, "--overwrite", *BICUBIC)
    assert result.returncode == 1
    assert "input" in one_error(result.stderr, video)
    assert video.read_bytes() == before

    hard, soft = tmp_path / "hard.mp4", tmp_path / "soft.mp4"
    os.link(video, hard)
    soft.symlink_to(video)
    monkeypatch.chdir(tmp_path)
    for out in (hard, soft, Path("x") / ".." / "a.mp4"):
        (tmp_path / "x").mkdir(exist_ok=True)
        for overwrite in (["--overwrite"], []):
            assert main(["video", str(video), "-o", str(out), *overwrite, *BICUBIC]) == 1
            line = one_error(capsys.readouterr().err, out)
            assert "input" in line and "--overwrite" not in line  # not "exists": overwriting would not help
    assert video.read_bytes() == before and hard.read_bytes() == before and soft.is_symlink()

    frames = tmp_path / "frames"
    png(frames / "f1.png"), png(frames / "f2.png", seed=1)
    kept = snapshot(frames)
    assert main(["video", str(frames), "-o", str(frames), "--overwrite", *BICUBIC]) == 1
    one_error(capsys.readouterr().err, frames)
    assert snapshot(frames) == kept

    from superres.infer.video import upscale_video

    with pytest.raises(ValueError, match="input"):  # the API refuses too
        upscale_video(video, hard, model="bicubic")
    assert video.read_bytes() == before


def test_upscale_refuses_a_hard_link_to_its_input(tmp_path, capsys):
    src = png(tmp_path / "x.png")
    before = src.read_bytes()
    hard = tmp_path / "hard.png"
    os.link(src, hard)
    assert main(["upscale", str(src), "-o", str(hard), "--overwrite", *BICUBIC]) == 1
    assert "input" in one_error(capsys.readouterr().err, src)
    assert hard.read_bytes() == before and os.path.samefile(src, hard)


def fake_detector(monkeypatch) -> None:
    """One face in every image, so that ``superres faces`` writes a crop without a detector network."""
    import superres.faces
    from superres.faces import Face

    def detector():
        landmarks = np.array([[14, 18], [26, 18], [20, 24], [15, 30], [25, 30]], np.float32)
        return lambda image: [Face(np.array([4, 4, 36, 36], np.float32), landmarks, 0.99)]

    monkeypatch.setattr(superres.faces, "FaceDetector", detector)


def test_faces_refuses_a_crop_that_would_replace_an_input(tmp_path, capsys, monkeypatch):
    fake_detector(monkeypatch)
    folder = tmp_path / "in"
    png(folder / "a.png", (40, 40)), png(folder / "a_face00.png", (40, 40), seed=1)
    kept = snapshot(folder)
    assert main(["faces", str(folder / "a.png"), str(folder / "a_face00.png"), "-o", str(folder), "--size", "16",
                 "-q"]) == 1
    assert "input" in one_error(capsys.readouterr().err, folder / "a_face00.png")
    after = snapshot(folder)
    assert {name: after[name] for name in kept} == kept and "a.json" not in after  # nothing of a.png written
    assert "a_face00.json" in after  # the other input is done


@pytest.mark.parametrize("command, scale", [("resize", "0.5"), ("degrade", "2")])
def test_degrade_and_resize_refuse_to_replace_their_inputs(tmp_path, capsys, command, scale):
    folder = png(tmp_path / "photos" / "a.png", size=(16, 16)).parent
    before = (folder / "a.png").read_bytes()
    assert main([command, str(folder), str(folder), "--scale", scale, "-q"]) == 1
    one_error(capsys.readouterr().err, folder / "a.png", "would overwrite the input")
    assert (folder / "a.png").read_bytes() == before and [p.name for p in folder.iterdir()] == ["a.png"]


# --- 5. outputs read back as inputs -----------------------------------------------------------------------


def test_an_output_folder_inside_the_input_folder_is_not_an_input(tmp_path, capsys, monkeypatch):
    nest = tmp_path / "nest"
    png(nest / "a.png"), png(nest / "sub" / "b.png", seed=1)
    for _ in range(2):
        assert main(["upscale", str(nest), "-r", "-o", str(nest / "out"), *BICUBIC]) == 0
    assert sorted(p.relative_to(nest).as_posix() for p in nest.rglob("*.png")) == [
        "a.png", "out/a.png", "out/sub/b.png", "sub/b.png"]
    assert main(["upscale", str(nest), "-r", "-o", str(nest / "out"), "--dry-run", "-m", "bicubic"]) == 0
    assert "0 to do, 2 skipped" in capsys.readouterr().err

    pattern = tmp_path / "pattern"
    png(pattern / "a.png"), png(pattern / "sub" / "b.png", seed=1)
    for _ in range(2):  # a glob with ** (sub-folders flattened): g/a.png would clash with a.png
        assert main(["upscale", str(pattern / "**" / "*.png"), "-o", str(pattern / "sub" / "g"), *BICUBIC]) == 0
    assert sorted(p.relative_to(pattern).as_posix() for p in pattern.rglob("*.png")) == [
        "a.png", "sub/b.png", "sub/g/a.png", "sub/g/b.png"]

    fake_detector(monkeypatch)
    nest = tmp_path / "faces_nest"
    png(nest / "a.png"), png(nest / "sub" / "b.png", seed=1)
    for _ in range(2):
        assert main(["faces", str(nest), "-r", "-o", str(nest / "faces"), "--size", "16", "-q"]) == 0
    assert sorted(p.relative_to(nest / "faces").as_posix() for p in (nest / "faces").rglob("*")) == [
        "a.json", "a_face00.png", "sub", "sub/b.json", "sub/b_face00.png"]


def test_the_input_folder_as_output_with_a_suffix_does_not_upscale_its_outputs(tmp_path, capsys):
    photos = tmp_path / "photos"
    png(photos / "a.png")
    for _ in range(2):
        assert main(["upscale", str(photos), "-o", str(photos), "--suffix", "_x2", *BICUBIC[:-1]]) == 0
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "a_x2.png"]
    assert f"skip {photos / 'a_x2.png'} (the output of {photos / 'a.png'}" in capsys.readouterr().err


# --- 6. temporary files of killed runs ----------------------------------------------------------------------

# a real `superres upscale`, stopped for good just before it renames its finished temporary file
_STUCK_WRITE = """
import sys, time
import superres.io.files as files

def stuck(tmp, path):
    print(tmp, flush=True)
    time.sleep(600)

files.publish = stuck
from superres.cli import main
main(sys.argv[1:])
"""

# a writer still at work, naming its file as superres.io.files.temp_beside does (without importing superres: fast)
_HOLD_TEMP = """
import os, sys, tempfile, time

folder, name = os.path.split(sys.argv[1])
fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
os.write(fd, b"x" * 1000)
print(tmp, flush=True)
time.sleep(600)
"""


def _temp_of(script: str, *args) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "the process wrote no temporary file"
    return proc, Path(line)


def test_upscale_and_faces_remove_the_temporary_files_of_killed_runs(tmp_path, monkeypatch):
    folder, out = tmp_path / "in", tmp_path / "out"
    png(folder / "big.png", (64, 48))
    killed, stale = _temp_of(_STUCK_WRITE, "upscale", folder, "-o", out, *BICUBIC)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert stale.parent == out and stale.name.startswith(f".big.png.{killed.pid}.") and stale.exists()
    assert not (out / "big.png").exists()

    png(folder / "done.png", seed=1)
    png(out / "done.png", seed=2)  # done: skipped on the rerun, which still removes its stale temporary file
    stale_of_done = out / f".done.png.{killed.pid}.abcd1234.tmp"
    stale_of_done.write_bytes(b"x")
    unrelated = out / ".notes.tmp"
    unrelated.write_bytes(b"mine")
    live, held = _temp_of(_HOLD_TEMP, out / "big.png")
    try:
        assert main(["upscale", str(folder), "-o", str(out), *BICUBIC]) == 0
        assert not stale.exists() and not stale_of_done.exists() and (out / "big.png").is_file()
        assert held.exists() and unrelated.exists()  # a running writer's file, and a file not ours, stay
    finally:
        live.kill()
        live.wait()

    fake_detector(monkeypatch)
    faces_out = tmp_path / "faces"
    faces_out.mkdir()
    stale_json = faces_out / f".big.json.{killed.pid}.abcd1234.tmp"
    stale_json.write_bytes(b"{")
    assert main(["faces", str(folder / "big.png"), "-o", str(faces_out), "--size", "16", "-q"]) == 0
    assert not stale_json.exists() and (faces_out / "big.json").is_file()


# --- 16. one line, not a traceback ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["upscale", "video"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "0", "1e-320", "1e400", "100000", "two"])
def test_bad_scales_are_refused_when_parsed(command, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "in.png", "-o", "out", "-m", "bicubic", f"--outscale={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"superres {command}: error: argument -s/--outscale: ") and value in err, err
    assert len(err.splitlines()) == 1, err  # not the whole usage above it


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "1e9"])
def test_bad_frame_rates_are_refused_when_parsed(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["video", "frames", "-o", "out.mp4", "-m", "bicubic", f"--fps={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("superres video: error: argument --fps: ") and len(err.splitlines()) == 1, err


def test_scales_from_a_shell(tmp_path, video):
    src = png(tmp_path / "x.png")
    for args in (["upscale", src, "-o", tmp_path / "y.png", "-s", "inf"],
                 ["video", video, "-o", tmp_path / "y.mp4", "-s", "-1"]):
        result = cli(*args, "-m", "bicubic")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "-s/--outscale" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "y.png").exists() and not (tmp_path / "y.mp4").exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, video, capsys):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("a file, not a folder")  # root writes anywhere, but not into a file
    assert main(["video", str(video), "-o", str(blocker / "frames"), *BICUBIC]) == 1
    one_error(capsys.readouterr().err, blocker / "frames")
    assert blocker.read_text() == "a file, not a folder"
    assert main(["video", str(video), "-o", str(blocker / "x.mp4"), *BICUBIC]) == 1
    one_error(capsys.readouterr().err, blocker / "x.mp4")
    for command in ("upscale", "faces"):
        assert main([command, str(png(tmp_path / "x.png")), "-o", str(blocker / "out"), "-q"]
                    + (["-m", "bicubic"] if command == "upscale" else [])) == 1
        one_error(capsys.readouterr().err, blocker / "out")


# --- 17. messages that say the wrong thing ----------------------------------------------------------------------


def test_a_clash_in_one_folder_names_both_inputs_and_the_way_out(tmp_path, capsys):
    folder = png(tmp_path / "in" / "x.png").parent
    Image.open(folder / "x.png").save(folder / "x.jpg")
    assert main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--format", "png", *BICUBIC]) == 1
    line = one_error(capsys.readouterr().err, folder / "x.png", folder / "x.jpg")
    assert "one folder" not in line and "--format same" in line and not (tmp_path / "out").exists()
    assert main(["upscale", str(folder), "-o", str(tmp_path / "out"), *BICUBIC]) == 0  # --format same: no clash

    png(tmp_path / "other" / "x.png", seed=3)
    assert main(["upscale", str(folder / "x.png"), str(tmp_path / "other" / "x.png"), "-o", str(tmp_path / "o2"),
                 *BICUBIC]) == 1
    assert "one folder" in one_error(capsys.readouterr().err, folder / "x.png", tmp_path / "other" / "x.png")

    assert main(["faces", str(folder), "-o", str(tmp_path / "faces"), "-q"]) == 1  # both would be x.json
    one_error(capsys.readouterr().err, folder / "x.png", folder / "x.jpg")
    assert not (tmp_path / "faces").exists()


def test_an_input_that_is_not_a_regular_file_is_one_line(tmp_path, capsys):
    result = cli_process("upscale", "/dev/zero", "-o", tmp_path / "z.png", "-m", "bicubic")
    assert result.returncode == 1
    assert "not a regular file" in one_error(result.stderr, "/dev/zero")
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    for command, out in (("upscale", "z.png"), ("upscale", "out"), ("faces", "out")):
        assert main([command, str(fifo), "-o", str(tmp_path / out), "-q"]) == 1  # not a read that never ends
        assert "not a regular file" in one_error(capsys.readouterr().err, fifo)
    assert not (tmp_path / "out").exists() and not (tmp_path / "z.png").exists()
