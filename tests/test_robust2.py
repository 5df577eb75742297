"""Issue 28, the rest of items 10 and 11: honest messages, and files that come out as they came in
(float TIFFs, ICC profiles at every bit depth, gray + alpha, stream tags, config paths)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_main
from PIL import Image

from superres.cli import main
from superres.io import read_image, write_image

tifffile = pytest.importorskip("tifffile")


def _bicubic_x2(image: np.ndarray) -> np.ndarray:
    from superres.infer import Upscaler

    return Upscaler("bicubic").upscale_array(image, 2)


def _err_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- float TIFFs ------------------------------------------------------------------------------

def test_float_tiff_in_float_tiff_out(tmp_path, photos, capsys):
    """float32 RGB in [0, 1]: read as it is, upscaled, written back as float32 (no rounding to 16 bits)."""
    rgb = photos["chelsea"][40:70, 50:90, :3].astype(np.float32)
    tifffile.imwrite(tmp_path / "in.tif", rgb, photometric="rgb")
    assert main(["upscale", str(tmp_path / "in.tif"), "-o", str(tmp_path / "out.tif"), "-m", "bicubic", "-s", "2",
                 "-q"]) == 0
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.float32 and out.shape == (60, 80, 3)
    np.testing.assert_allclose(out, _bicubic_x2(rgb), atol=1e-6)
    assert np.abs(out * 65535 - np.rint(out * 65535)).max() > 0.01  # not 16-bit levels
    assert capsys.readouterr().err == ""
    # to PNG: the nearest lossless integer depth, 16 bits
    assert main(["upscale", str(tmp_path / "in.tif"), "-o", str(tmp_path / "out.png"), "-m", "bicubic", "-s", "2",
                 "-q"]) == 0
    assert read_image(tmp_path / "out.png")[1].bit_depth == 16


def test_float_tiff_outside_0_1_is_mapped_and_mapped_back(tmp_path, photos, capsys):
    gray = photos["astronaut"][100:130, 200:236, 1].astype(np.float64) * 4 - 1  # [-1, 3], float64
    tifffile.imwrite(tmp_path / "in.tif", gray)
    assert main(["upscale", str(tmp_path / "in.tif"), "-o", str(tmp_path / "out.tif"), "-m", "bicubic", "-s", "2",
                 "-q"]) == 0
    lines = _err_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("superres: warning:") and "mapped linearly" in lines[0], lines
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.float64 and out.shape == (60, 72)  # gray stays gray, float64 stays float64
    low, high = float(min(0, gray.min())), float(max(1, gray.max()))
    unit = ((gray - low) / (high - low)).astype(np.float32)
    expected = _bicubic_x2(np.repeat(unit[..., None], 3, axis=2))[..., 1] * (high - low) + low
    np.testing.assert_allclose(out, expected, atol=1e-5 * (high - low))


def test_float16_and_pillow_float_tiffs_and_bad_values(tmp_path, capsys):
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "half.tif", rng.random((12, 10, 3)).astype(np.float16), photometric="rgb")
    assert main(["upscale", str(tmp_path / "half.tif"), "-o", str(tmp_path / "half_x2.tif"), "-m", "bicubic",
                 "-s", "2", "-q"]) == 0
    assert tifffile.imread(tmp_path / "half_x2.tif").dtype == np.float16
    Image.fromarray(rng.random((12, 10)).astype(np.float32)).save(tmp_path / "pillow.tif")  # mode F
    img, info = read_image(tmp_path / "pillow.tif")
    assert info.float_samples and info.gray and img.dtype == np.float32
    bad = rng.random((8, 8)).astype(np.float32)
    bad[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad)
    capsys.readouterr()
    assert main(["upscale", str(tmp_path / "nan.tif"), "-o", str(tmp_path / "nan_x2.tif"), "-m", "bicubic",
                 "-q"]) == 1
    lines = _err_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "nan.tif" in lines[0] and "NaN" in lines[0], lines


# --- checkpoints --------------------------------------------------------------------------------

class _Code:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_checkpoint_errors_say_what_the_file_is(tmp_path):
    from superres.zoo import CheckpointError, load_model

    (tmp_path / "random.pth").write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "random.pth")
    assert "not a PyTorch checkpoint" in str(e.value)
    assert "pickled code" not in str(e.value) and "weights_only" not in str(e.value)

    (tmp_path / "damaged.pth").write_bytes(b"\x80\x02" + np.random.default_rng(2).bytes(500))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as e:
        load_model(tmp_path / "damaged.pth")
    assert "weights_only" not in str(e.value)

    torch.save({"params": {"w": torch.zeros(1)}, "x": _Code()}, tmp_path / "code.pth")  # the zip format
    with pytest.raises(CheckpointError, match=r"refused: its pickle imports (posix|nt)\.system") as e:
        load_model(tmp_path / "code.pth")
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)

    with open(tmp_path / "plain.pth", "wb") as f:
        pickle.dump({"numbers": [1, 2, 3]}, f, protocol=4)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "plain.pth")


def test_a_layout_whose_shapes_fit_no_configuration_names_the_shapes():
    from superres.zoo import CheckpointError, create_model, load_model

    state = create_model("SRVGGNetCompact").module.state_dict()
    state["body.0.weight"] = state["body.0.weight"].flatten(1)  # keys all there, a 2-D convolution weight
    with pytest.raises(CheckpointError) as e:
        load_model(state)
    message = str(e.value)
    assert "missing none" not in message and "100%" not in message
    assert "SRVGGNetCompact" in message and "body.0.weight 64x27 (default 64x3x3x3)" in message, message


# --- messages -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["upscale", "degrade", "resize"])
def test_the_pixel_limit_message_names_an_option_that_exists(tmp_path, photos, command, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", photos["chelsea"][:24, :32])
    out = str(tmp_path / "out")
    args = {"upscale": ["upscale", str(src), "-o", out, "-m", "bicubic", "-s", "2"],
            "degrade": ["degrade", str(src), out, "--scale", "2"], "resize": ["resize", str(src), out, "--scale", "2"]}
    args = args[command]
    assert main([*args, "-q", "--max-pixels", "500"]) == 1
    err = capsys.readouterr().err
    assert "over the limit of 500 pixels" in err and "--max-pixels" in err
    assert main([*args, "-q", "--max-pixels", "100000"]) == 0


def test_truncated_and_bad_single_files_fail_before_the_model_loads_in_one_line(tmp_path, photos, monkeypatch,
                                                                                capfd):
    """A truncated PNG: one line, no OpenCV ``WARN`` (written by its C++ logger to fd 2), no model loaded."""
    import superres.infer

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(superres.infer, "Upscaler", no_model)
    write_image(tmp_path / "full.png", photos["astronaut"][:200, :200])
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    tifffile.imwrite(tmp_path / "nan.tif", np.full((6, 6), np.nan, np.float32))
    for name in ("cut.png", "nan.tif"):
        assert main(["upscale", str(tmp_path / name), "-o", str(tmp_path / f"x_{name}"), "-q"]) == 1
        out, err = capfd.readouterr()
        lines = _err_lines(err)
        assert len(lines) == 1 and lines[0].startswith(f"superres: error: {tmp_path / name}"), lines
        assert "WARN" not in err + out


def test_non_image_files_in_a_folder_are_counted_as_skipped(tmp_path, photos, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", photos["chelsea"][:20, :24])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "anim.gif")
    (src / "notes.txt").write_text("hello")
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2"]) == 0
    err = capsys.readouterr().err
    assert "1 done, 2 skipped, 0 failed" in err
    assert "2 file(s) skipped" in err and ".gif" in err and ".txt" in err
    assert main(["degrade", str(src), str(tmp_path / "lr"), "--scale", "2"]) == 0
    assert "2 file(s) skipped" in capsys.readouterr().err


def test_training_warnings_are_one_line_even_with_quiet(tmp_path, photos):
    data = tmp_path / "data"
    for split, n in (("train", 3), ("val", 1)):
        (data / split).mkdir(parents=True)
        for i in range(n):
            write_image(data / split / f"{i}.png", photos["chelsea"][20 * i:20 * i + 48, :48])
    config = {"name": "w", "scale": 2, "output": str(tmp_path / "run"),
              "model": {"arch": "FSRCNN", "args": {"upscale": 2, "num_channels": 3, "d": 4, "s": 2, "m": 1}},
              "data": {"hr": str(data / "train"), "patch_size": 16, "batch_size": 2},
              "val": [{"name": "val", "hr": str(data / "train")}],  # all of train: held out, and said
              "train": {"iterations": 1},
              "log": {"tensorboard": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run_main("train", tmp_path / "c.yaml", "-q")
    lines = _err_lines(result.stderr)
    assert any(line.startswith("superres: warning: 3 validation image(s)") for line in lines), result.stderr
    assert all(line.startswith("superres: ") for line in lines), result.stderr
    assert "UserWarning" not in result.stderr


# --- kept as it came ----------------------------------------------------------------------------

def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_icc_profile_survives_at_8_and_16_bits(tmp_path, photos):
    import cv2

    icc = _srgb_profile()
    rgb8 = np.rint(photos["chelsea"][:20, :24, :3] * 255).astype(np.uint8)
    rgb16 = np.rint(photos["chelsea"][:20, :24, :3] * 65535).astype(np.uint16)
    Image.fromarray(rgb8).save(tmp_path / "p8.png", icc_profile=icc)
    Image.fromarray(rgb8).save(tmp_path / "j8.jpg", icc_profile=icc)
    tifffile.imwrite(tmp_path / "t16.tif", rgb16, photometric="rgb", extratags=[(34675, "B", len(icc), icc, True)])
    sources = ["p8.png", "j8.jpg", "t16.tif"]
    if hasattr(cv2, "imencodeWithMetadata"):  # OpenCV 5 writes a 16-bit PNG with a profile
        _, buf = cv2.imencodeWithMetadata(".png", rgb16[..., ::-1].copy(), [cv2.IMAGE_METADATA_ICCP],
                                          [np.frombuffer(icc, np.uint8)])
        (tmp_path / "p16.png").write_bytes(buf.tobytes())
        sources.append("p16.png")
    for name in sources:
        src, dst = tmp_path / name, tmp_path / f"x2_{name}"
        assert main(["upscale", str(src), "-o", str(dst), "-m", "bicubic", "-s", "2", "-q"]) == 0
        img, info = read_image(dst)
        assert info.icc_profile == icc, name
        assert info.bit_depth == read_image(src)[1].bit_depth and img.shape == (40, 48, 3), name


@pytest.mark.parametrize("name, bits", [("la.png", 8), ("la.tif", 8), ("la16.tif", 16)])
def test_gray_with_alpha_comes_out_gray_with_alpha(tmp_path, photos, name, bits):
    gray = photos["astronaut"][:16, :20, 1]
    alpha = np.linspace(0, 1, 20, dtype=np.float32)[None, :].repeat(16, 0)
    la = np.rint(np.stack([gray, alpha], axis=2) * (255 if bits == 8 else 65535)).astype(f"uint{bits}")
    if name.endswith(".png"):
        Image.fromarray(la, "LA").save(tmp_path / name)
    else:
        tifffile.imwrite(tmp_path / name, la, photometric="minisblack", extrasamples=("unassalpha",))
    dst = tmp_path / f"x2_{name}"
    assert main(["upscale", str(tmp_path / name), "-o", str(dst), "-m", "bicubic", "-s", "2", "-q"]) == 0
    if name.endswith(".png"):
        assert Image.open(dst).mode == "LA"
    else:
        out = tifffile.imread(dst)
        assert out.shape == (32, 40, 2) and out.dtype == la.dtype
    img, info = read_image(dst)
    assert info.gray and info.alpha and img.shape == (32, 40, 4)


def test_video_keeps_the_language_of_its_streams(tmp_path, photos):
    av = pytest.importorskip("av")
    src = tmp_path / "tagged.mp4"
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        sound = out.add_stream("aac", rate=48000)
        video.metadata["language"], sound.metadata["language"] = "fra", "eng"
        pixels = np.ascontiguousarray(np.rint(photos["chelsea"][:24, :32, :3] * 255).astype(np.uint8))
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.float32), format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, 1920 * i
            out.mux(sound.encode(chunk))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    assert main(["video", str(src), "-o", str(tmp_path / "x2.mp4"), "-m", "bicubic", "-s", "2", "-q"]) == 0
    with av.open(str(tmp_path / "x2.mp4")) as result:
        languages = {s.type: s.metadata.get("language") for s in result.streams}
    assert languages == {"video": "fra", "audio": "eng"}


def test_demo_leaves_no_temporary_folder(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["demo", "-m", "bicubic"]) == 0
    assert "superres-demo-" in capsys.readouterr().out  # it did use one
    assert list(tmp_path.iterdir()) == []


# --- training configs ---------------------------------------------------------------------------

def test_config_paths_resolve_from_the_file_that_writes_them(tmp_path, photos, monkeypatch):
    from superres.train import load_config

    for split in ("train", "val", "extra"):
        (tmp_path / "data" / split).mkdir(parents=True)
        write_image(tmp_path / "data" / split / "a.png", photos["chelsea"][:48, :48])
    (tmp_path / "cfg" / "sub").mkdir(parents=True)
    (tmp_path / "cfg" / "base.yaml").write_text(yaml.safe_dump({
        "name": "b", "scale": 2, "model": {"arch": "FSRCNN", "args": {"upscale": 2}},
        "data": {"hr": "../data/train"}, "train": {"iterations": 2}}))  # relative to cfg/
    (tmp_path / "cfg" / "sub" / "child.yaml").write_text(yaml.safe_dump({
        "base": "../base.yaml", "name": "c",
        "val": [{"name": "v", "hr": "../../data/val"}, {"name": "abs", "hr": str(tmp_path / "data" / "extra")}]}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(tmp_path / "cfg" / "sub" / "child.yaml")
    assert [Path(p) for p in config.data.hr] == [tmp_path / "data" / "train"]
    assert [Path(v.hr) for v in config.val] == [tmp_path / "data" / "val", tmp_path / "data" / "extra"]
    assert config.output_dir == Path("runs/c")  # where runs go: the working directory
    monkeypatch.chdir(tmp_path / "data")  # --set values: from the working directory
    config = load_config(tmp_path / "cfg" / "sub" / "child.yaml", ["data.hr=extra"])
    assert [Path(p) for p in config.data.hr] == [tmp_path / "data" / "extra"]


def test_a_cosine_period_longer_than_the_run_warns_once(tmp_path, photos):
    import warnings

    from superres.train import load_config

    (tmp_path / "hr").mkdir()
    write_image(tmp_path / "hr" / "a.png", photos["chelsea"][:48, :48])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "name": "c", "scale": 2, "model": {"arch": "FSRCNN", "args": {"upscale": 2}},
        "data": {"hr": str(tmp_path / "hr")},
        "train": {"iterations": 20000, "scheduler": {"type": "CosineAnnealingRestart", "periods": [20000]}}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(tmp_path / "c.yaml")  # the recipe as written: silent
    with pytest.warns(UserWarning, match=r"cosine periods add up to 20000 .*train.iterations=1000") as record:
        load_config(tmp_path / "c.yaml", ["train.iterations=1000"])
    assert len(record) == 1 and "\n" not in str(record[0].message)


def test_shipped_recipes_find_their_shared_data_from_any_folder(tmp_path, monkeypatch, shared_data):
    from superres.train import load_config

    monkeypatch.chdir(tmp_path)
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "fsrcnn_x3_t91.yaml")
    assert Path(config.data.hr[0]).resolve() == (shared_data / "T91").resolve()

