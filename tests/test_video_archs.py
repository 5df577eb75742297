"""Video SR networks against BasicSR 1.4.2: the same state dict (strict keys) computes the same function."""

from __future__ import annotations

import pytest
import torch

from superres.archs.basicvsr import BasicVSR
from superres.archs.spynet import SpyNet, flow_warp


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.05 if "weight" in name else 0.01))
    return module.eval()


def frames(photos, n=1, t=3, h=40, w=52) -> torch.Tensor:
    """Real frames: a crop of a photo moving 2 pixels right and 1 down per frame."""
    clip = [photos["chelsea"][10 + i:10 + i + h, 20 + 2 * i:20 + 2 * i + w, :3] for i in range(t)]
    x = torch.stack([torch.from_numpy(f.copy()).permute(2, 0, 1) for f in clip])[None]
    return x.repeat(n, 1, 1, 1, 1).float()


def test_flow_warp_matches_basicsr(basicsr):
    from basicsr.archs.arch_util import flow_warp as reference

    x, flow = torch.rand(2, 3, 9, 11), torch.randn(2, 9, 11, 2) * 3
    for padding in ("zeros", "border"):
        torch.testing.assert_close(flow_warp(x, flow, padding_mode=padding), reference(x, flow, padding_mode=padding))


def test_spynet_matches_basicsr(basicsr, photos):
    from basicsr.archs.spynet_arch import SpyNet as Reference

    ours = randomize(SpyNet())
    ref = Reference().eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = frames(photos, t=2, h=45, w=70)  # not multiples of 32
    with torch.no_grad():
        torch.testing.assert_close(ours(x[:, 0], x[:, 1]), ref(x[:, 0], x[:, 1]), rtol=1e-4, atol=1e-5)


def test_basicvsr_matches_basicsr(basicsr, photos):
    from basicsr.archs.basicvsr_arch import BasicVSR as Reference

    ours = randomize(BasicVSR(num_feat=16, num_block=2))
    ref = Reference(num_feat=16, num_block=2).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = frames(photos, t=3)
    with torch.no_grad():
        out = ours(x)
        torch.testing.assert_close(out, ref(x), rtol=1e-4, atol=1e-5)
    assert out.shape == (1, 3, 3, 160, 208)


def test_basicvsr_parameter_count():
    assert sum(p.numel() for p in BasicVSR().parameters()) == 6_291_311  # the paper's 30 blocks


@pytest.mark.parametrize("t", [1, 2])
def test_basicvsr_short_clips(t, photos):
    with torch.no_grad():
        assert BasicVSR(num_feat=8, num_block=1)(frames(photos, t=t)).shape[1] == t


def test_basicsr_layouts_are_detected_and_refused_as_image_upscalers(tmp_path):
    from superres.infer import Upscaler
    from superres.zoo import load_model

    state = {"params": BasicVSR(num_feat=8, num_block=3).state_dict()}  # BasicSR's checkpoint layout
    torch.save(state, tmp_path / "basicvsr.pth")
    desc = load_model(tmp_path / "basicvsr.pth")
    assert (desc.arch, desc.kwargs["num_feat"], desc.kwargs["num_block"], desc.scale) == ("BasicVSR", 8, 3, 4)
    assert desc.purpose == "video"
    torch.save({"params": SpyNet().state_dict()}, tmp_path / "spynet.pth")
    assert load_model(tmp_path / "spynet.pth").purpose == "optical flow"
    with pytest.raises(ValueError, match="is a video network, not an image upscaler"):
        Upscaler(str(tmp_path / "basicvsr.pth"))
    from superres.archs.basicvsr import IconVSR
    from superres.archs.edvr import EDVR

    for net in (IconVSR(num_feat=16, num_block=2, temporal_padding=3),
                EDVR(num_feat=16, num_frame=7, deformable_groups=4, num_extract_block=2, num_reconstruct_block=3,
                     with_predeblur=True, hr_in=True)):
        torch.save({"params": net.state_dict()}, tmp_path / "net.pth")
        desc = load_model(tmp_path / "net.pth")
        assert desc.arch == type(net).__name__ and desc.purpose == "video"
        assert desc.scale == (1 if getattr(net, "hr_in", False) else 4)  # hr_in: deblurring, output at input size


@pytest.mark.parametrize("options", [{}, {"with_predeblur": True}, {"with_predeblur": True, "hr_in": True},
                                     {"with_tsa": False}])
def test_edvr_matches_basicsr(basicsr, photos, options):
    from basicsr.archs.edvr_arch import EDVR as Reference  # noqa: N811 - the class name is an acronym

    from superres.archs.edvr import EDVR

    kwargs = {"num_feat": 16, "num_frame": 3, "deformable_groups": 4, "num_extract_block": 1,
              "num_reconstruct_block": 1, **options}
    ours = randomize(EDVR(**kwargs))  # random offsets too: the deformable sampling is exercised
    ref = Reference(**kwargs).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = frames(photos, t=3, h=32, w=48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)


def test_edvr_parameter_counts():
    from superres.archs.edvr import EDVR

    assert sum(p.numel() for p in EDVR().parameters()) == 3_300_131  # EDVR-M
    large = EDVR(num_feat=128, num_reconstruct_block=40)
    assert sum(p.numel() for p in large.parameters()) == 20_633_827  # EDVR-L


@pytest.mark.parametrize("t", [5, 7])
def test_iconvsr_matches_basicsr(basicsr, photos, t):
    from basicsr.archs.basicvsr_arch import IconVSR as Reference

    from superres.archs.basicvsr import IconVSR

    ours = randomize(IconVSR(num_feat=16, num_block=1, keyframe_stride=3))
    ref = Reference(num_feat=16, num_block=1, keyframe_stride=3).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = frames(photos, t=t, h=34, w=45)  # sizes padded to multiples of 4 inside
    with torch.no_grad():
        out = ours(x)
        torch.testing.assert_close(out, ref(x), rtol=1e-4, atol=1e-5)
    assert out.shape == (1, t, 3, 136, 180)
    assert sum(p.numel() for p in IconVSR().parameters()) == 8_694_991


@pytest.mark.parametrize("alignment", ["learned", "rectified", "none"])
def test_temporal_adaptive_net_runs_forward_and_backward(alignment, photos):
    from superres.archs.tan import TemporalAdaptiveNet

    net = TemporalAdaptiveNet(scale=3, num_in_ch=3, windows=(1, 3, 5), num_feat=(8, 8), alignment=alignment)
    x = frames(photos, t=5, h=33, w=37)  # odd sizes
    out = net(x)
    assert out.shape == (1, 3, 99, 111)
    out.mean().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if not n.startswith("flow_net"))


def test_temporal_adaptive_net_parts():
    from superres.archs.tan import SpatialAlignment, TemporalAdaptiveNet, rectified_flow_align

    ref = torch.rand(2, 1, 20, 24)
    torch.testing.assert_close(SpatialAlignment()(ref, ref), ref)  # identity warp at initialisation
    moved = torch.roll(ref, shifts=(-2, 3), dims=(2, 3))  # moved(p) = ref(p + (2, -3))
    flow = torch.zeros(2, 2, 20, 24)
    flow[:, 0], flow[:, 1] = 3.4, -2.2  # rounds to an exact (3, -2) pixel translation
    torch.testing.assert_close(rectified_flow_align(moved, flow, patch=8)[..., 2:, :-3], ref[..., 2:, :-3])
    net = TemporalAdaptiveNet(scale=2, windows=(1, 3), num_feat=(4, 4), alignment="none")
    for branch in net.branches:  # every branch says 0.25 everywhere: any mixture must too
        torch.nn.init.zeros_(branch.conv3.weight)
        torch.nn.init.constant_(branch.conv3.bias, 0.25)
    torch.testing.assert_close(net(torch.rand(1, 3, 1, 8, 8)), torch.full((1, 1, 16, 16), 0.25))
    with pytest.raises(ValueError, match="expected 3 frames"):
        net(torch.rand(1, 5, 1, 8, 8))


# --- VSR-Transformer ---------------------------------------------------------------------------------

def test_spynet_mmedit_layout_computes_basicsrs_function(basicsr, photos):
    """VSR-Transformer's SPyNet has MMEditing's keys (``...basic_module.M.conv``); same function as BasicSR's."""
    from basicsr.archs.spynet_arch import SpyNet as Reference

    ref = randomize(Reference())
    ours = SpyNet(layout="mmedit").eval()
    renamed = {}
    for key, value in ref.state_dict().items():
        parts = key.split(".")
        if len(parts) == 5:  # basic_module.N.basic_module.M.weight, M = 0, 2, 4, 6, 8 (ReLUs between)
            parts = [*parts[:3], str(int(parts[3]) // 2), "conv", parts[4]]
        renamed[".".join(parts)] = value
    ours.load_state_dict(renamed, strict=True)
    x = frames(photos, t=2, h=45, w=70)
    with torch.no_grad():
        torch.testing.assert_close(ours(x[:, 0], x[:, 1]), ref(x[:, 0], x[:, 1]), rtol=1e-4, atol=1e-5)


def test_vsrt_official_layout_parameters_and_detection(tmp_path):
    from superres.archs.vsrt import VSRTransformer
    from superres.zoo import load_model

    paper = VSRTransformer(depth=5)  # the released REDS/Vimeo setting
    assert sum(p.numel() for p in paper.parameters()) == 32_564_335  # the paper's 32.6M
    state = paper.state_dict()
    assert state["transformer.layers.0.0.fn.norm.weight"].shape == (64, 64, 64)
    for key in ("spynet.spynet.basic_module.5.basic_module.4.conv.bias", "pos_embedding.penc.inv_freq",
                "transformer.layers.4.1.fn.fn.backward_resblocks.main.2.29.conv2.weight",
                "transformer.layers.4.1.fn.fn.fusion.weight", "transformer.layers.0.0.fn.fn.to_q.weight",
                "feature_extraction.4.conv1.weight", "reconstruction.29.conv2.weight", "conv_last.bias"):
        assert key in state, key
    small = VSRTransformer(num_feat=8, num_frame=7, depth=2, num_extract_block=2, num_reconstruct_block=3)
    torch.save({"params": small.state_dict()}, tmp_path / "vsrt.pth")
    desc = load_model(tmp_path / "vsrt.pth")
    assert desc.arch == "VSRTransformer" and desc.purpose == "video" and desc.scale == 4
    assert {k: desc.kwargs[k] for k in ("num_feat", "num_frame", "depth", "num_extract_block")} == \
        {"num_feat": 8, "num_frame": 7, "depth": 2, "num_extract_block": 2}


@pytest.mark.parametrize("num_frame", [5, 7])
def test_vsrt_position_encoding_matches_the_2021_package(num_frame):
    pe = pytest.importorskip("positional_encodings.positional_encodings")
    from superres.archs.vsrt import PositionEncoding3D

    x = torch.rand(2, num_frame, 16, 12, 10)
    torch.testing.assert_close(PositionEncoding3D(num_frame)(x), pe.PositionalEncodingPermute3D(num_frame)(x))


def test_vsrt_runs_on_any_frame_size_by_overlapping_tiles(photos):
    from superres.archs.vsrt import VSRTransformer

    torch.manual_seed(0)
    net = VSRTransformer(num_feat=8, depth=1, num_extract_block=1, num_reconstruct_block=1, feat_size=16,
                         patch_size=4, tile_overlap=4)
    x = frames(photos, t=5, h=16, w=41) / 255
    with torch.no_grad():
        out = net(x)
        left, right = net(x[..., :16]), net(x[..., -16:])
    assert out.shape == (1, 5, 3, 64, 164)
    # outside the overlaps each output pixel is one tile's, untouched by blending
    torch.testing.assert_close(out[..., :32], left[..., :32])  # tiles start at 0, 8, 17, 25
    torch.testing.assert_close(out[..., -32:], right[..., -32:])
    small = x[..., :11, :13].clone().requires_grad_(True)  # smaller than a tile: padded, cropped back
    y = net(small)
    y.mean().backward()
    assert y.shape == (1, 5, 3, 44, 52) and small.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="takes 5 frames"):
        net(x[:, :3])


def test_untrained_spynet_predicts_zero_flow_and_learns():
    """From scratch, SPyNet starts at the identity warp, and the SR loss still reaches its weights."""
    ref, supp = torch.rand(2, 3, 40, 56), torch.rand(2, 3, 40, 56)
    net = SpyNet()
    flow = net(ref, supp)
    assert flow.shape == (2, 2, 40, 56) and flow.abs().max() == 0
    flow_warp(supp, flow.permute(0, 2, 3, 1)).mean().backward()
    assert all(m.basic_module[-1].weight.grad.abs().sum() > 0 for m in net.basic_module)
