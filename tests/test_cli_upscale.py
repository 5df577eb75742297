"""`superres upscale` and `superres models` end to end, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_main
from PIL import Image

from superres.io import read_image, write_image

FAST = ("-m", "realesr-animevideov3")


def run_cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """``superres ARGS``, in this process (see conftest.run_main): the same exit code, stdout and stderr."""
    return run_main(*args, env=env)


@pytest.fixture
def folder(tmp_path, photos):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write_image(src / "a.png", photos["chelsea"][:40, :48])
    write_image(src / "b.jpg", photos["astronaut"][:32, :32])
    write_image(src / "sub" / "c.png", photos["chelsea"][40:72, :40])
    return src


def test_folder_skip_resume_overwrite_dry_run(folder, tmp_path):
    out = tmp_path / "out"
    result = run_cli("upscale", folder, "-o", out, *FAST, "--suffix", "_x4")
    assert result.returncode == 0, result.stderr
    assert "2 done, 0 skipped, 0 failed" in result.stderr
    a = read_image(out / "a_x4.png")[0]
    assert a.shape == (160, 192, 3) and (out / "b_x4.jpg").is_file() and not (out / "sub").exists()

    result = run_cli("upscale", folder, "-o", out, *FAST, "--suffix", "_x4", "-r", "--dry-run")
    assert f"{folder / 'sub' / 'c.png'} -> {out / 'sub' / 'c_x4.png'}" in result.stdout
    assert "1 to do, 2 skipped" in result.stderr and not (out / "sub").exists()

    mtime = (out / "a_x4.png").stat().st_mtime_ns
    result = run_cli("upscale", folder, "-o", out, *FAST, "--suffix", "_x4", "-r")
    assert "1 done, 2 skipped, 0 failed" in result.stderr and (out / "sub" / "c_x4.png").is_file()
    assert (out / "a_x4.png").stat().st_mtime_ns == mtime
    result = run_cli("upscale", folder / "a.png", "-o", out, *FAST, "--suffix", "_x4", "--overwrite")
    assert "1 done, 0 skipped" in result.stderr and (out / "a_x4.png").stat().st_mtime_ns != mtime
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left


def test_single_file_outscale_format_and_glob(folder, tmp_path):
    target = tmp_path / "one.webp"
    result = run_cli("upscale", folder / "a.png", "-o", target, *FAST, "-s", "2.5")
    assert result.returncode == 0, result.stderr
    assert Image.open(target).size == (120, 100)
    result = run_cli("upscale", str(folder / "*.png"), "-o", tmp_path / "g", *FAST, "--format", "jpg", "-q")
    assert result.returncode == 0 and result.stderr == ""
    assert [p.name for p in (tmp_path / "g").iterdir()] == ["a.jpg"]


def test_16bit_gray_alpha_and_icc_are_kept(tmp_path, photos):
    src = tmp_path / "in"
    src.mkdir()
    rgb16 = (photos["chelsea"][:24, :24, :3] * 65535).round().astype(np.uint16)
    write_image(src / "deep.png", rgb16)
    gray = Image.fromarray((photos["astronaut"][:24, :24, 0] * 255).astype(np.uint8), mode="L")
    gray.save(src / "gray.png")
    rgba = np.concatenate([photos["chelsea"][:24, :24, :3], np.linspace(0, 1, 24 * 24).reshape(24, 24, 1)], axis=2)
    write_image(src / "alpha.png", rgba.astype(np.float32))
    icc = Image.open(src / "gray.png")
    Image.fromarray((photos["chelsea"][:24, :24, :3] * 255).astype(np.uint8)).save(
        src / "icc.jpg", icc_profile=b"\0" * 128 + b"acsp" + b"\0" * 8)
    del icc
    result = run_cli("upscale", src, "-o", tmp_path / "out", *FAST)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    deep = Image.open(out / "deep.png")
    assert deep.mode.startswith("I;16") or deep.mode == "I" or read_image(out / "deep.png")[1].bit_depth == 16
    assert read_image(out / "deep.png")[1].bit_depth == 16
    assert Image.open(out / "gray.png").mode == "L"
    img, info = read_image(out / "alpha.png")
    assert info.alpha and img.shape == (96, 96, 4) and img[..., 3].min() < 0.1 and img[..., 3].max() > 0.9
    assert Image.open(out / "icc.jpg").info.get("icc_profile") == b"\0" * 128 + b"acsp" + b"\0" * 8


def test_bad_inputs_each_one_line_and_the_batch_goes_on(folder, tmp_path):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "anim.gif").write_bytes(b"GIF89a")
    out = tmp_path / "out"
    result = run_cli("upscale", folder, folder / "anim.gif", "-o", out, *FAST)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("superres: error:")]
    assert len(errors) == 2
    assert any("broken.png: corrupt" in e for e in errors) and any("anim.gif" in e for e in errors)
    assert "2 done, 0 skipped, 2 failed" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]


@pytest.mark.parametrize("args, message", [
    (["{tmp}/empty", "-o", "{tmp}/o"], "no images found"),
    (["{tmp}/missing.png", "-o", "{tmp}/o"], "no such file or folder"),
    (["{in}", "-o", "{tmp}/afile/out", *FAST], "cannot create the output folder"),
    (["{in}", "-o", "{tmp}/o", "-m", "realesrgan-x8"], "named models: realesrgan-x4plus"),
    (["{in}", "-o", "{tmp}/o", "--tile", "32"], "tile 32 is too small for realesrgan-x4plus"),
    (["{in}", "-o", "{in}", *FAST], "would overwrite the input"),
])
def test_upscale_errors(folder, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("a file, not a folder")
    for p in folder.rglob("*"):
        if p.is_file() and p.name != "a.png":
            p.unlink()
    a = folder / "a.png"
    write_image(a, np.random.default_rng(0).random((200, 200, 3)).astype(np.float32))
    result = run_cli("upscale", *[x.format(tmp=tmp_path, **{"in": folder}) for x in args])
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("superres: error:")]
    assert len(errors) == 1


def test_inputs_named_twice_or_colliding(folder, tmp_path, photos):
    result = run_cli("upscale", folder, folder / "a.png", "-o", tmp_path / "o", *FAST, "--dry-run")
    assert result.stdout.count("a.png ->") == 1  # a file named twice is done once
    (tmp_path / "other").mkdir()
    write_image(tmp_path / "other" / "a.png", photos["chelsea"][:8, :8])
    result = run_cli("upscale", folder / "a.png", tmp_path / "other" / "a.png", "-o", tmp_path / "o", *FAST)
    assert result.returncode == 1 and "is also the output of" in result.stderr
    assert not (tmp_path / "o").exists()


def test_torchrun_shards_do_each_file_once(tmp_path, photos):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        write_image(src / f"{i}.png", photos["chelsea"][i * 10:i * 10 + 16, :16])
    procs = [subprocess.Popen([sys.executable, "-m", "superres", "upscale", str(src), "-o", str(tmp_path / "out"),
                               *FAST], env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"},
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    logs = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert "3 done" in logs[0] and "2 done" in logs[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{i}.png" for i in range(5)]


def test_models_lists_the_pretrained_models():
    result = run_cli("models")
    assert result.returncode == 0
    for name in ("realesrgan-x4plus (default)", "realesrgan-x4plus-anime", "realesr-animevideov3", "bicubic"):
        assert name in result.stdout
    assert "16.7M RRDBNet" in result.stdout
    header, default = result.stdout.splitlines()[:2]
    assert "licence" in header and " MIT " in default  # scale, size, purpose and licence per model
    assert any("animesr-v2" in line and "Apache-2.0" in line for line in result.stdout.splitlines())
    assert "no package registry ships their weights" in result.stdout and "GFPGANv1.4.pth" in result.stdout


def test_set5_end_to_end_with_the_default_model(shared_data, tmp_path):
    from superres.metrics.folders import score_folders

    out = tmp_path / "sr"
    result = run_cli("upscale", shared_data / "Set5" / "LR_bicubic" / "X4", "-o", out)
    assert result.returncode == 0, result.stderr
    records, _, problems = score_folders(shared_data / "Set5" / "HR", out, crop_border=4, y_channel=True,
                                         suffix="x4", modcrop=4)
    assert not problems and len(records) == 5
    psnr = np.mean([r["psnr"] for r in records])
    assert 25 < psnr < 30  # a GAN model trained on real degradations: sharp, not PSNR-optimal
