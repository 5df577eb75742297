"""ONNX export: round trips in ONNX Runtime at two input sizes, dynamic axes, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superres.zoo import create_model
from superres.zoo.export import ExportError, export_onnx

ort = pytest.importorskip("onnxruntime")

SMALL = [("RRDBNet", {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}),
         ("RRDBNet", {"scale": 2, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}),
         ("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2}),
         ("EDSR", {"upscale": 3, "num_feat": 8, "num_block": 1}),
         ("UpCunet2x", {}), ("UpCunet3x", {"pro": True}), ("UpCunet4x", {}),
         # transformers: shifted-window masks and DAT's inner padding follow the input size in the graph
         ("SwinIR", {"img_size": 8, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4,
                     "num_feat": 8}),
         ("DAT", {"img_size": 8, "embed_dim": 32, "split_size": (2, 8), "depth": (3,), "num_heads": (2,), "upscale": 3,
                  "upsampler": "pixelshuffledirect"}),
         ("SPAN", {"feature_channels": 8, "upscale": 2}),
         ("HAT", {"embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "squeeze_factor": 4,
                  "num_feat": 8}),
         ("UpConv7", {}), ("CUNet", {"scale": 1})]


def _made(arch, kwargs):
    torch.manual_seed(0)
    desc = create_model(arch, **kwargs)
    with torch.no_grad():
        for p in desc.module.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return desc


@pytest.mark.parametrize("arch, kwargs", SMALL, ids=[f"{a}-{i}" for i, (a, _) in enumerate(SMALL)])
def test_onnx_round_trip_at_two_sizes(tmp_path, arch, kwargs):
    desc = _made(arch, kwargs)
    report = export_onnx(desc, tmp_path / "net.onnx")
    assert report.max_abs_diff <= 1e-4 and len(set(report.sizes)) == 2
    # a third size and a batch of two, which the export never saw: the axes are dynamic
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    m = desc.size_multiple
    h, w = (max(desc.min_size, n + -n % m) for n in (26, 34))
    x = torch.rand(2, desc.in_channels, h, w)
    with torch.no_grad():
        ref = desc.module(x).numpy()
    out = session.run(["output"], {"input": x.numpy()})[0]
    assert out.shape == (2, desc.out_channels, h * desc.scale, w * desc.scale)
    assert np.abs(out - ref).max() <= 1e-4


def test_fp16_export(tmp_path):
    report = export_onnx(_made("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2}), tmp_path / "net.onnx", fp16=True)
    assert report.fp16 and report.max_abs_diff <= 1e-2
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"


def test_deformable_convolution_is_refused_by_name(tmp_path):
    desc = create_model("EDVR", num_feat=8, num_frame=3, deformable_groups=1, num_extract_block=1,
                        num_reconstruct_block=1)
    with pytest.raises(ExportError, match="torchvision::deform_conv2d"):
        export_onnx(desc, tmp_path / "edvr.onnx")


def test_a_graph_onnx_runtime_cannot_run_is_one_error(tmp_path):
    # DAT's position-bias MLP is 0 wide at embed_dim 16: PyTorch runs LayerNorm(0), ONNX Runtime refuses it
    desc = create_model("DAT", img_size=8, embed_dim=16, depth=(1,), num_heads=(2,), upscale=2)
    with pytest.raises(ExportError, match=r"DAT exported but fails in ONNX Runtime: .*LayerNormalization"):
        export_onnx(desc, tmp_path / "dat.onnx")


def test_export_command(tmp_path, capsys):
    from superres.cli import main
    from superres.zoo import save_model

    save_model(_made("EDSR", {"upscale": 2, "num_feat": 8, "num_block": 1}), tmp_path / "edsr.safetensors")
    assert main(["export", str(tmp_path / "edsr.safetensors"), "-o", str(tmp_path / "edsr.onnx"), "--opset", "18"]) == 0
    out = capsys.readouterr().out
    assert "EDSR, opset 18, fp32" in out and "max abs diff" in out and (tmp_path / "edsr.onnx").is_file()
    assert main(["export", "bicubic", "-o", str(tmp_path / "b.onnx")]) == 1
    assert "no network" in capsys.readouterr().err
