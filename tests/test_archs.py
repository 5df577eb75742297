import pytest
import torch

import superres
from superres.archs import ARCHITECTURES


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Official counts (issue list, BasicSR's models) and the papers' (weights + biases + PReLU slopes).
PARAM_COUNTS = [
    ("RRDBNet", {}, 16_697_987),                                    # ESRGAN / RealESRGAN_x4plus
    ("RRDBNet", {"num_block": 6}, 4_467_779),                       # RealESRGAN_x4plus_anime_6B
    ("EDSR", {"num_feat": 256, "num_block": 32, "res_scale": 0.1}, 43_089_923),
    ("EDSR", {}, 1_517_571),                                        # EDSR-baseline x4
    ("MSRResNet", {}, 1_517_571),
    ("SRVGGNetCompact", {}, 621_424),                               # realesr-animevideov3
    ("SRCNN", {"channels": (1, 64, 32, 1), "kernel_sizes": (9, 1, 5)}, 8_032 + 97),   # paper: 8,032 weights
    ("SRCNN", {"channels": (1, 64, 32, 1), "kernel_sizes": (9, 5, 5)}, 57_184 + 97),  # paper: 57,184 weights
    ("FSRCNN", {}, 12_464 + 173 + 172),  # paper: 12,464 weights; + 173 biases + 172 PReLU slopes
    ("FSRCNN", {"d": 32, "s": 5, "m": 1}, 3_937 + 75 + 74),  # FSRCNN-s: 3,937 weights
    ("ESPCN", {}, 22_729),  # (5*5*1*64 + 64) + (3*3*64*32 + 32) + (3*3*32*9 + 9) at x3
]


@pytest.mark.parametrize("arch, kwargs, expected", PARAM_COUNTS)
def test_parameter_counts(arch, kwargs, expected):
    assert n_params(superres.create_model(arch, **kwargs).module) == expected


def _basicsr_references(basicsr):
    from basicsr.archs import discriminator_arch, edsr_arch, rrdbnet_arch, srresnet_arch, srvgg_arch

    return [
        (rrdbnet_arch.RRDBNet(3, 3, scale=4, num_feat=64, num_block=2, num_grow_ch=32), (1, 3, 13, 17)),
        (rrdbnet_arch.RRDBNet(3, 3, scale=2, num_feat=32, num_block=1, num_grow_ch=16), (1, 3, 14, 18)),
        (rrdbnet_arch.RRDBNet(3, 3, scale=1, num_feat=32, num_block=1, num_grow_ch=16), (1, 3, 16, 20)),
        (edsr_arch.EDSR(3, 3, num_feat=64, num_block=2, upscale=4), (1, 3, 13, 17)),
        (edsr_arch.EDSR(3, 3, num_feat=256, num_block=1, upscale=2, res_scale=0.1), (1, 3, 9, 11)),
        (edsr_arch.EDSR(3, 3, num_feat=64, num_block=2, upscale=3), (1, 3, 13, 17)),
        (srresnet_arch.MSRResNet(3, 3, num_feat=64, num_block=2, upscale=4), (1, 3, 13, 17)),
        (srresnet_arch.MSRResNet(3, 3, num_feat=32, num_block=2, upscale=3), (1, 3, 13, 17)),
        (srresnet_arch.MSRResNet(3, 3, num_feat=32, num_block=2, upscale=2), (1, 3, 13, 17)),
        (srvgg_arch.SRVGGNetCompact(3, 3, num_feat=64, num_conv=16, upscale=4), (1, 3, 13, 17)),
        (srvgg_arch.SRVGGNetCompact(3, 3, num_feat=48, num_conv=4, upscale=2, act_type="relu"), (1, 3, 13, 17)),
        (discriminator_arch.VGGStyleDiscriminator(3, 64), (2, 3, 128, 128)),
        (discriminator_arch.UNetDiscriminatorSN(3, 32), (1, 3, 32, 40)),
    ]


def test_basicsr_state_dicts_load_strictly_and_compute_the_same(basicsr):
    torch.manual_seed(0)
    for reference, shape in _basicsr_references(basicsr):
        reference.eval()
        for p in reference.parameters():  # BasicSR zero-fills biases: randomise to test them too
            p.data.add_(torch.randn_like(p) * 0.01)
        loaded = superres.load_model(reference.state_dict())  # no hint: detected from keys/shapes
        assert loaded.arch == type(reference).__name__
        assert n_params(loaded.module) == n_params(reference)
        x = torch.rand(shape)
        with torch.no_grad():
            expected = reference(x)
        assert (loaded.module(x) - expected).abs().max().item() <= 1e-5, loaded.arch


SR_CASES = [
    ("SRCNN", {"upscale_factor": s}) for s in (2, 3, 4)
] + [("FSRCNN", {"upscale": s}) for s in (2, 3, 4)] + [("ESPCN", {"upscale": s}) for s in (2, 3, 4)] + [
    ("SRResNet", {"upscale": s, "num_block": 2}) for s in (2, 3, 4)] + [
    ("MSRResNet", {"upscale": s, "num_block": 2}) for s in (2, 3, 4)] + [
    ("EDSR", {"upscale": s, "num_block": 2}) for s in (2, 3, 4)] + [
    ("RRDBNet", {"scale": s, "num_block": 1, "num_feat": 16, "num_grow_ch": 8}) for s in (1, 2, 4)] + [
    ("SRVGGNetCompact", {"upscale": s, "num_conv": 2, "num_feat": 16}) for s in (2, 3, 4)]


@pytest.mark.parametrize("arch, kwargs", SR_CASES)
def test_forward_backward_odd_sizes(arch, kwargs):
    desc = superres.create_model(arch, **kwargs)
    model, channels, scale, m = desc.module, desc.in_channels, desc.scale, desc.size_multiple
    assert channels == (1 if arch in ("FSRCNN", "ESPCN") else 3)
    h, w = 13 + -13 % m, 17 + -17 % m  # pixel-unshuffle (RRDBNet x2, x1) needs multiples
    x = torch.rand(2, channels, h, w, requires_grad=True)
    out = model(x)
    assert out.shape == (2, channels, h * scale, w * scale)
    out.mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_clear_errors_for_impossible_inputs():
    with pytest.raises(ValueError, match="divisible by 2"):
        superres.create_model("RRDBNet", scale=2, num_block=1).module(torch.rand(1, 3, 13, 17))
    with pytest.raises(ValueError, match="128x128"):
        superres.create_model("VGGStyleDiscriminator").module(torch.rand(1, 3, 100, 100))
    with pytest.raises(ValueError, match="x2, x3 and x4"):
        superres.create_model("MSRResNet", upscale=8)
    with pytest.raises(ValueError, match="unknown architecture"):
        superres.create_model("NoSuchNet")
    assert set(ARCHITECTURES) == {"SRCNN", "FSRCNN", "ESPCN", "SRResNet", "MSRResNet", "EDSR", "RRDBNet",
                                  "SRVGGNetCompact", "VGGStyleDiscriminator", "UNetDiscriminatorSN", "SpyNet",
                                  "BasicVSR", "IconVSR", "EDVR", "TemporalAdaptiveNet", "VSRTransformer",
                                  "UpCunet2x", "UpCunet3x", "UpCunet4x", "GFPGANv1", "GFPGANv1Clean",
                                  "RestoreFormer", "CodeFormer", "SwinIR", "DAT", "SPAN", "HAT", "UpConv7", "CUNet",
                                  "MSRSWVSR", "RIFE31", "RIFE35", "RIFE38", "RIFE40"}
    with pytest.raises(ValueError, match="at least 20"):
        superres.create_model("UpCunet2x").module(torch.rand(1, 3, 19, 40))


def test_srcnn_matlab_upsampling_matches_imresize():
    from superres.ops import imresize

    model = superres.create_model("SRCNN", upscale_factor=3, upsample_mode="none").module
    matlab = superres.create_model("SRCNN", upscale_factor=3, upsample_mode="matlab").module
    matlab.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(matlab(x), model(imresize(x, 3)))


def test_realcugan_has_the_official_pth_layout():
    """Key names and shapes of bilibili's upcunet_v3.py (the up2x/up3x/up4x-*.pth files; pro files add "pro")."""
    import superres

    for scale, bottom in ((2, (64, 3, 4, 4)), (3, (64, 3, 5, 5)), (4, (64, 64, 4, 4))):
        state = superres.create_model(f"UpCunet{scale}x", pro=True).module.state_dict()
        assert state["unet1.conv_bottom.weight"].shape == bottom
        assert state["unet1.conv1.conv.0.weight"].shape == (32, 3, 3, 3)
        assert state["unet1.conv2.seblock.conv1.weight"].shape == (8, 64, 1, 1)
        assert state["unet2.conv3.seblock.conv2.bias"].shape == (128,)
        assert state["unet2.conv4_up.weight"].shape == (64, 64, 2, 2) and "pro" in state
        assert ("conv_final.weight" in state) == (scale == 4)
        assert len(state) == 61 + 2 * (scale == 4)  # 30 convs with bias, pro (and x4's conv_final)
        assert superres.load_model(state).arch == f"UpCunet{scale}x"
