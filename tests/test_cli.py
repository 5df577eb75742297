import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_main

from superres.cli import main
from superres.io import write_image

# Published bicubic baselines on Set5 (Y channel, crop = scale): PSNR dB, SSIM.
PUBLISHED = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``superres ARGS``, in this process (see conftest.run_main): the same exit code, stdout and stderr."""
    return run_main(*args)


def run_process(*args: str) -> subprocess.CompletedProcess:
    """``python -m superres ARGS`` in a process of its own, for what the command is as a program."""
    return subprocess.run([sys.executable, "-m", "superres", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_bicubic_baseline_matches_published(shared_data, tmp_path, scale, capsys):
    hr = shared_data / "Set5" / "HR"
    assert main(["degrade", str(hr), str(tmp_path / "lr"), "--scale", str(scale), "-q"]) == 0
    assert main(["resize", str(tmp_path / "lr"), str(tmp_path / "sr"), "--scale", str(scale), "-q"]) == 0
    report = tmp_path / "m.json"
    assert main(["metrics", str(hr), str(tmp_path / "sr"), "--crop-border", str(scale), "--y",
                 "--modcrop", str(scale), "--json", str(report)]) == 0
    records = json.loads(report.read_text())
    assert [r["name"] for r in records] == ["baby", "bird", "butterfly", "head", "woman", "mean"]
    mean = records[-1]
    psnr, ssim = PUBLISHED[scale]
    assert abs(mean["psnr"] - psnr) <= 0.03 and abs(mean["ssim"] - ssim) <= 0.001, mean
    assert "mean" in capsys.readouterr().out


def test_degrade_bd_and_16bit(tmp_path, photos):
    src = tmp_path / "hr"
    src.mkdir()
    img16 = np.rint(photos["chelsea"][:101, :130] * 65535).astype(np.uint16)
    write_image(src / "a.tif", img16)
    assert main(["degrade", str(src), str(tmp_path / "lr"), "--scale", "4", "--kind", "bd", "-q"]) == 0
    from superres.io import read_image

    lr, info = read_image(tmp_path / "lr" / "a.png")
    assert lr.shape == (25, 32, 3) and info.bit_depth == 16  # 101x130 mod-cropped to 100x128


def test_metrics_csv_and_niqe(tmp_path, photos, capsys):
    gt, sr = tmp_path / "gt", tmp_path / "sr"
    gt.mkdir()
    sr.mkdir()
    for name, img in photos.items():
        write_image(gt / f"{name}.png", img)
        write_image(sr / f"{name}_x4.png", np.clip(img + 0.01, 0, 1))
    assert main(["metrics", str(gt), str(sr), "--suffix", "_x4", "--csv", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [r["name"] for r in rows] == [*sorted(photos), "mean"]
    assert all(35 < float(r["psnr"]) < 45 for r in rows)
    capsys.readouterr()
    assert main(["metrics", str(gt)]) == 0
    assert "NIQE" in capsys.readouterr().out


def test_bad_inputs_one_line_nonzero_and_batch_goes_on(tmp_path, photos):
    gt, sr = tmp_path / "gt", tmp_path / "sr"
    gt.mkdir()
    sr.mkdir()
    for name in ("a", "b", "c", "d"):
        write_image(gt / f"{name}.png", photos["chelsea"])
    write_image(sr / "a.png", photos["chelsea"])
    (sr / "b.png").write_bytes(b"")  # empty
    (sr / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt
    write_image(sr / "d.png", photos["chelsea"][:100])  # wrong size
    result = run_cli("metrics", gt, sr, "--json", tmp_path / "m.json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("superres: error:")]
    assert len(errors) == 3
    assert any("b.png: empty file" in e for e in errors)
    assert any("c.png: corrupt" in e for e in errors)
    assert any("d.png: size 451x100 differs" in e for e in errors)
    records = json.loads((tmp_path / "m.json").read_text())
    assert [r["name"] for r in records] == ["a", "mean"]  # the good pair was still scored

    # degrade: one bad file in the folder, the others are done
    (gt / "z.jpg").write_bytes(b"not a jpeg")
    write_image(gt / "tiny.png", photos["chelsea"][:5, :5])  # 4x4 after mod-crop: too small for the BD blur
    result = run_cli("degrade", gt, tmp_path / "lr", "--scale", "4", "--kind", "bd")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "z.jpg: not an image" in result.stderr
    assert f"{gt / 'tiny.png'}: image (4, 4) is too small" in result.stderr
    assert sorted(p.name for p in (tmp_path / "lr").iterdir()) == ["a.png", "b.png", "c.png", "d.png"]


@pytest.mark.parametrize("args, message", [
    (["metrics", "{tmp}/missing"], "no such folder"),
    (["metrics", "{tmp}/empty"], "no images found"),
    (["degrade", "{tmp}/empty", "{tmp}/o", "--scale", "2.5"], "integer"),
    (["resize", "{tmp}/imgs", "{tmp}/afile/out", "--scale", "2"], "cannot create the output folder"),
])
def test_cli_errors(tmp_path, photos, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "imgs").mkdir()
    write_image(tmp_path / "imgs" / "x.png", photos["chelsea"])
    (tmp_path / "afile").write_text("a file, not a folder")
    result = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_version_and_demo(tmp_path):
    # `python -m superres` itself, as a program
    result = run_process("--help")
    assert result.returncode == 0 and "metrics" in result.stdout, result.stderr
    result = run_process("--version")
    assert result.returncode == 0 and result.stdout.startswith("superres "), result.stderr
    result = run_cli("demo", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "astronaut realesrgan-x4plus" in result.stdout and "NIQE" in result.stdout
    assert (tmp_path / "realesrgan-x4plus_x4" / "chelsea.png").is_file()


def test_import_is_cheap():
    code = "import sys, superres; superres.io; superres.ops; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_closed_pipe_and_a_misspelled_model_get_one_line():
    """`superres schema | head` ends quietly; a misspelled model name gets a suggestion (bicubic listed)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "superres", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader goes away before the command writes
    assert "Traceback" not in proc.stderr.read() and proc.wait() in (0, 141)
    result = run_cli("eval", "-m", "realesrgan-x4pls", ".", "--scale", "4")
    assert result.returncode == 1 and "did you mean realesrgan-x4plus?" in result.stderr
    assert "bicubic" in result.stderr and len(result.stderr.strip().splitlines()) == 1
