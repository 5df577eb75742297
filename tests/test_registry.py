"""Every registered architecture, a few small variants each: create -> weights -> load gives the same
model, its facts match a real forward pass, and no detector claims another architecture's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superres.archs import REGISTRY
from superres.archs.spec import ALL_PRECISIONS, PURPOSES
from superres.zoo import create_model, load_model, save_model

# arch -> [(kwargs, arguments the weights do not record)]; small so that the file runs in seconds.
# "*" in the unrecorded set: the plain state dict cannot tell this variant apart (e.g. SRCNN's
# upsample_mode="none" changes its scale), so only the self-describing safetensors round trip applies.
VARIANTS: dict[str, list[tuple[dict, set[str]]]] = {
    "SRCNN": [({"channels": (1, 8, 4, 1), "kernel_sizes": (9, 1, 5), "upscale_factor": 3}, set()),
              ({"channels": (3, 8, 4, 3), "kernel_sizes": (9, 5, 5), "upscale_factor": 2,
                "upsample_mode": "matlab"}, {"upsample_mode"}),
              ({"channels": (1, 8, 4, 1), "upscale_factor": 4, "upsample_mode": "none"}, {"*"})],
    "FSRCNN": [({"upscale": 2, "num_channels": 1, "d": 8, "s": 4, "m": 1}, set()),
               ({"upscale": 4, "num_channels": 3, "d": 12, "s": 6, "m": 2}, set())],
    "ESPCN": [({"upscale": 2, "num_channels": 1, "num_feat": (8, 4)}, set()),
              ({"upscale": 3, "num_channels": 3, "num_feat": (8, 6)}, set())],
    "SRResNet": [({"upscale": s, "num_feat": 8, "num_block": 1}, set()) for s in (2, 3, 4)]
    + [({"num_in_ch": 1, "num_out_ch": 1, "num_feat": 8, "num_block": 2}, set())],
    "MSRResNet": [({"upscale": s, "num_feat": 8, "num_block": 1}, set()) for s in (2, 3, 4)]
    + [({"num_feat": 8, "num_block": 1, "upsample_lrelu": False}, {"upsample_lrelu"})],
    "EDSR": [({"upscale": s, "num_feat": 8, "num_block": 1}, set()) for s in (2, 3, 4)]
    + [({"num_feat": 8, "num_block": 2, "img_range": 1.0}, {"img_range"})],
    "RRDBNet": [({"scale": s, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}, set()) for s in (1, 2, 4)]
    + [({"num_in_ch": 1, "num_out_ch": 1, "num_feat": 8, "num_block": 2, "num_grow_ch": 4}, set())],
    "SRVGGNetCompact": [({"upscale": 2, "num_feat": 8, "num_conv": 2, "act_type": "relu"}, set()),
                        ({"upscale": 4, "num_feat": 8, "num_conv": 1, "num_in_ch": 1, "num_out_ch": 1}, set()),
                        ({"upscale": 3, "num_feat": 8, "num_conv": 2, "act_type": "leakyrelu"}, {"act_type"})],
    # SwinIR's four upsamplers; the gray JPEG-artefact setting (7x7 windows, img_range 255 inferred from them).
    "SwinIR": [({"img_size": 8, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4, "num_feat": 8},
                set()),
               ({"img_size": 8, "embed_dim": 8, "depths": (1, 1), "num_heads": (2, 1), "window_size": 4, "upscale": 3,
                 "upsampler": "pixelshuffledirect"}, {"img_size"}),  # no shifted block: no mask
               ({"img_size": 8, "embed_dim": 8, "depths": (2,), "num_heads": (1,), "window_size": 4, "upscale": 4,
                 "upsampler": "nearest+conv", "resi_connection": "3conv", "num_feat": 8}, set()),
               ({"img_size": 7, "in_chans": 1, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 7,
                 "upscale": 1, "upsampler": "", "img_range": 255.0}, set())],
    # DAT: img_size is stored only through the shifted blocks' masks (the third block of a group on).
    "DAT": [({"img_size": 8, "embed_dim": 32, "depth": (2,), "num_heads": (2,), "num_feat": 8}, {"img_size"}),
            ({"img_size": 8, "embed_dim": 32, "split_size": (2, 8), "depth": (3,), "num_heads": (4,), "upscale": 3,
              "upsampler": "pixelshuffledirect", "resi_connection": "3conv"}, set()),
            ({"img_size": 8, "in_chans": 1, "embed_dim": 32, "depth": (1, 1), "num_heads": (2, 2), "upscale": 4,
              "num_feat": 8}, set())],
    # Real-CUGAN's widths are fixed by the official code; pro weights carry a "pro" entry.
    "UpCunet2x": [({}, set()), ({"pro": True}, set())],
    "UpCunet3x": [({}, set()), ({"in_channels": 1, "out_channels": 1, "pro": True}, set())],
    "UpCunet4x": [({}, set()), ({"pro": True}, set())],
    "SPAN": [({"feature_channels": 6, "upscale": 2}, set()),
             ({"feature_channels": 4, "upscale": 3, "num_in_ch": 1, "num_out_ch": 1, "norm": False}, set())],
    "HAT": [({"embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "squeeze_factor": 4,
              "num_feat": 8}, set()),
            ({"embed_dim": 8, "depths": (1, 1), "num_heads": (2, 1), "window_size": 8, "overlap_ratio": 0.25,
              "compress_ratio": 2, "squeeze_factor": 2, "num_feat": 4, "upscale": 3, "resi_connection": "identity",
              "conv_scale": 0.1}, {"conv_scale"})],
    # waifu2x: widths fixed by the official models; the x2 CUNet's weights are UpCunet2x's layout (TWINS).
    "UpConv7": [({}, set()), ({"in_channels": 1, "out_channels": 1}, set())],
    "CUNet": [({"scale": 1}, set()), ({"scale": 2}, {"*"})],
    "MSRSWVSR": [({"num_feat": 8, "num_block": (2, 1, 1)}, set()),
                 ({"num_feat": 4, "num_block": (3, 2, 1), "netscale": 2}, set())],
    "VGGStyleDiscriminator": [({"num_feat": 4}, set()), ({"num_feat": 2, "input_size": 256, "num_in_ch": 1}, set())],
    "UNetDiscriminatorSN": [({"num_feat": 4}, set()), ({"num_feat": 4, "skip_connection": False}, {"skip_connection"})],
    "SpyNet": [({}, set()), ({"levels": 4, "layout": "mmedit"}, set())],
    "BasicVSR": [({"num_feat": 8, "num_block": 1}, set())],
    "IconVSR": [({"num_feat": 8, "num_block": 1}, set()),
                ({"num_feat": 8, "num_block": 1, "temporal_padding": 3, "keyframe_stride": 3}, {"keyframe_stride"})],
    "EDVR": [({"num_feat": 8, "num_frame": 3, "deformable_groups": 1, "num_extract_block": 1,
               "num_reconstruct_block": 1}, set()),
             ({"num_feat": 8, "num_frame": 5, "deformable_groups": 2, "num_extract_block": 1,
               "num_reconstruct_block": 2, "with_tsa": False, "with_predeblur": True}, set()),
             ({"num_feat": 8, "num_frame": 3, "deformable_groups": 1, "num_extract_block": 1,
               "num_reconstruct_block": 1, "with_predeblur": True, "hr_in": True}, set())],
    "TemporalAdaptiveNet": [({"scale": 2, "windows": (1, 3), "num_feat": (4, 4), "alignment": "none"}, set()),
                            ({"scale": 3, "num_in_ch": 3, "windows": (1, 3, 5), "num_feat": (8, 4)}, set()),
                            ({"scale": 2, "num_in_ch": 3, "windows": (3,), "num_feat": (4, 4),
                              "alignment": "rectified", "patch": 8}, {"patch"})],
    "VSRTransformer": [({"num_feat": 8, "feat_size": 32, "num_extract_block": 1, "num_reconstruct_block": 1,
                         "depth": 1}, set()),
                       ({"num_feat": 8, "feat_size": 16, "num_frame": 7, "num_extract_block": 1,
                         "num_reconstruct_block": 1, "depth": 1, "tile_overlap": 4}, {"*"})],  # tile_overlap 16
    # Face restorers: tiny decoders; unrecorded: what the official code fixes but the weights do not store.
    "GFPGANv1": [({"out_size": 64, "num_style_feat": 16, "num_mlp": 1, "narrow": 0.125}, set()),
                 ({"out_size": 32, "num_style_feat": 8, "num_mlp": 2, "narrow": 0.125, "sft_half": False,
                   "different_w": False, "input_is_latent": False, "lr_mlp": 1.0}, {"input_is_latent", "lr_mlp"})],
    "GFPGANv1Clean": [({"out_size": 64, "num_style_feat": 16, "num_mlp": 1, "narrow": 0.125}, set()),
                      ({"out_size": 128, "num_style_feat": 8, "channel_multiplier": 1, "narrow": 0.0625,
                        "sft_half": False, "different_w": False, "input_is_latent": False}, {"input_is_latent"})],
    "RestoreFormer": [({"n_embed": 16, "embed_dim": 8, "ch": 32, "ch_mult": (1, 1), "num_res_blocks": 1,
                        "z_channels": 8, "head_size": 2}, {"head_size"})],
    "CodeFormer": [({"nf": 32, "ch_mult": (1, 1), "dim_embd": 32, "n_head": 2, "n_layers": 1, "codebook_size": 16,
                     "connect_list": ("16", "32"), "fidelity_weight": 0.7}, {"n_head", "fidelity_weight"})],
    # RIFE: widths fixed by the official code (tests/test_rife.py checks the official layouts).
    "RIFE31": [({}, set())],
    "RIFE35": [({}, set())],
    "RIFE38": [({}, set())],
    "RIFE40": [({}, set())],  # refine=True (the U-Net residual): tests/test_rife.py
}

# Architectures whose weights have exactly another's layout (the same network, a different convention
# around it): a bare state dict is claimed by the other. waifu2x's x2 CUNet is Real-CUGAN's UpCunet2x
# with replicate instead of reflect padding; files written by superres record which.
TWINS = {("CUNet", 2): "UpCunet2x"}

CASES = [pytest.param(arch, kwargs, unrecorded, id=f"{arch}-{i}")
         for arch in REGISTRY for i, (kwargs, unrecorded) in enumerate(VARIANTS.get(arch, []))]


def test_every_registered_architecture_has_variants():
    assert set(VARIANTS) == set(REGISTRY)


def _made(arch: str, kwargs: dict):
    torch.manual_seed(0)
    desc = create_model(arch, **kwargs)
    with torch.no_grad():  # non-zero everywhere (SpyNet's last layers start at zero), so that loads are checked
        for p in desc.module.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return desc


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("arch, kwargs, unrecorded", CASES)
def test_round_trip(tmp_path, arch, kwargs, unrecorded):
    desc = _made(arch, kwargs)
    assert desc.arch == arch and desc.module.superres_config == {"arch": arch, "kwargs": desc.kwargs}
    facts = desc.facts
    assert facts.purpose in PURPOSES and "fp32" in facts.precisions and set(facts.precisions) <= set(ALL_PRECISIONS)
    assert (facts.video is not None) == (facts.purpose == "video")

    save_model(desc, tmp_path / "net.safetensors")
    loaded = load_model(tmp_path / "net.safetensors")
    assert (loaded.arch, loaded.kwargs, loaded.facts) == (arch, desc.kwargs, facts)
    _same_weights(loaded.module, desc.module)

    if "*" in unrecorded:
        return
    spec = REGISTRY[arch]
    plain = load_model(desc.module.state_dict(), scale=desc.scale if spec.unstored_scale else None)
    assert plain.arch == arch
    assert {k: v for k, v in plain.kwargs.items() if k not in unrecorded} == \
        {k: v for k, v in desc.kwargs.items() if k not in unrecorded}
    assert (plain.scale, plain.in_channels, plain.out_channels) == (desc.scale, desc.in_channels, desc.out_channels)
    _same_weights(plain.module, desc.module)


def _input_size(facts) -> tuple[int, int]:
    """Odd sizes where the network allows, else the smallest multiples of its size_multiple above them."""
    m = facts.size_multiple
    return tuple(max(facts.min_size, n + -n % m) for n in (13, 17))


@pytest.mark.parametrize("arch, kwargs, unrecorded", CASES)
def test_facts_match_a_forward_pass(arch, kwargs, unrecorded):
    desc = _made(arch, kwargs)
    facts, module = desc.facts, desc.module.eval()
    h, w = _input_size(facts)
    if arch == "VGGStyleDiscriminator":  # exactly input_size x input_size
        assert facts.size_multiple == facts.min_size == kwargs.get("input_size", 128)
    torch.manual_seed(1)
    if facts.video is None:
        x = torch.rand(1, facts.in_channels, h, w)
    else:
        video = facts.video
        frames = video.frames if video.fixed or video.mode == "window" else min(video.frames, 7)
        x = torch.rand(1, frames, facts.in_channels, h, w)
    with torch.no_grad():
        out = module(x, x.roll(1, -1)) if facts.purpose == "optical flow" else module(x)
    if out.ndim == 2:  # one value per image (VGG-style discriminator)
        assert out.shape == (1, facts.out_channels)
        return
    expected = (facts.out_channels, facts.scale * h, facts.scale * w)
    if facts.video is not None and facts.video.mode == "clip":
        assert out.shape == (1, x.shape[1], *expected)
    else:
        assert out.shape == (1, *expected)
    assert torch.isfinite(out).all()


def test_detectors_exclude_each_other():
    """Each variant's weights are claimed by its own detector alone, and by no foreign-layout rename."""
    for case in CASES:
        arch, kwargs, _ = case.values
        state = create_model(arch, **kwargs).module.state_dict()
        claims = [name for name, spec in REGISTRY.items() if spec.detect(state) is not None]
        twin = TWINS.get((arch, create_model(arch, **kwargs).scale))
        assert claims == [twin or arch], (arch, kwargs, claims)
        renames = [name for name, spec in REGISTRY.items() if spec.convert is not None and spec.convert(state)]
        assert renames == [], (arch, kwargs, renames)


def test_bicubic_is_a_model():
    from superres.ops import imresize

    desc = load_model("bicubic", scale=3)
    assert (desc.module, desc.arch, desc.kwargs, desc.purpose) == (None, "bicubic", {"scale": 3}, "sr")
    assert (desc.scale, desc.in_channels, desc.out_channels) == (3, 3, 3)
    img = np.random.default_rng(0).integers(0, 256, (11, 13, 3), dtype=np.uint8)
    out = desc.resample(img)
    assert out.dtype == np.uint8 and out.shape == (33, 39, 3)
    np.testing.assert_array_equal(out, imresize(img, 3))  # rounded after each pass, as MATLAB
    assert load_model("bicubic").scale == 4 and load_model("bicubic", scale=2.5).scale == 2.5


def _runs_on_images(arch: str, kwargs: dict) -> bool:
    """Image and video upscalers and face restorers; 1-channel video networks (the Y-channel TAN) run in
    training only."""
    facts = create_model(arch, **kwargs).facts
    return facts.purpose in ("sr", "face") or (facts.purpose == "video" and facts.in_channels == 3)


UPSCALERS = [case for case in CASES if _runs_on_images(*case.values[:2])]


@pytest.mark.parametrize("arch, kwargs, unrecorded", UPSCALERS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_every_upscaler_runs_through_the_runner_at_odd_sizes(arch, kwargs, unrecorded, dtype):
    """The runner pads each network to its size requirement and crops back: any size in, scale x out,
    the input's dtype and (for 1-channel networks given RGB: Y in, chroma by bicubic) 3 channels."""
    from superres.runner import Runner
    from superres.runtime import RunOptions

    desc = _made(arch, kwargs)
    runner = Runner(desc, RunOptions(device="cpu", precision="fp32", backend="torch"))
    rng = np.random.default_rng(0)
    h, w = 11, 7
    shape = (h, w, 3) if desc.video is None else (desc.video.frames, h, w, 3)
    if desc.in_channels not in (1, 3):
        shape = (*shape[:-1], desc.in_channels)
    peak = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    image = (rng.random(shape) * peak).astype(dtype)
    out = runner(image)
    s = desc.scale
    frames = () if desc.video is None or desc.video.mode == "window" else (shape[0],)
    assert out.shape == (*frames, h * s, w * s, shape[-1]) and out.dtype == dtype
    assert runner.precision_used == "fp32"
