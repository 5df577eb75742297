"""Architecture detection from a state dict's key names and tensor shapes (in the spirit of
spandrel), plus the key renames that bring other layouts to ours.

Each detector returns constructor arguments when the keys match its architecture, else None.
SRCNN and FSRCNN do not store their scale in the weights (SRCNN runs on a pre-upscaled image,
FSRCNN's scale is a stride): ``load_model(..., scale=S)`` supplies it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch

StateDict = dict[str, torch.Tensor]


def _count(state: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.fullmatch(k))})


def _max_index(state: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return max(int(m.group(1)) for k in state if (m := rx.fullmatch(k)))


def _rrdbnet(s: StateDict) -> dict | None:
    if not {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_up2.weight", "conv_last.weight"} <= s.keys():
        return None
    num_out_ch = s["conv_last.weight"].shape[0]
    folded = s["conv_first.weight"].shape[1]
    scale = {1: 4, 4: 2, 16: 1}.get(folded // num_out_ch, 4)
    return {"num_in_ch": folded // {4: 1, 2: 4, 1: 16}[scale], "num_out_ch": num_out_ch, "scale": scale,
            "num_feat": s["conv_first.weight"].shape[0], "num_block": _count(s, r"body\.(\d+)\.rdb1\.conv1\.weight"),
            "num_grow_ch": s["body.0.rdb1.conv1.weight"].shape[0]}


def _srvgg(s: StateDict) -> dict | None:
    if "body.0.weight" not in s or any(not k.startswith("body.") for k in s):
        return None
    last = _max_index(s, r"body\.(\d+)\.weight")
    if s[f"body.{last}.weight"].ndim != 4 or s["body.0.weight"].ndim != 4:
        return None
    num_in_ch, num_feat = s["body.0.weight"].shape[1], s["body.0.weight"].shape[0]
    upscale = math.isqrt(s[f"body.{last}.weight"].shape[0] // num_in_ch)
    return {"num_in_ch": num_in_ch, "num_out_ch": num_in_ch, "num_feat": num_feat, "num_conv": (last - 2) // 2,
            "upscale": upscale, "act_type": "prelu" if "body.1.weight" in s else "relu"}


def _trunk(s: StateDict) -> dict:
    """Arguments shared by EDSR, MSRResNet and SRResNet: conv_first -> body.N -> conv_last."""
    return {"num_in_ch": s["conv_first.weight"].shape[1], "num_out_ch": s["conv_last.weight"].shape[0],
            "num_feat": s["conv_first.weight"].shape[0], "num_block": _count(s, r"body\.(\d+)\.conv1\.weight")}


def _subpixel_scale(s: StateDict, num_feat: int) -> int:
    """Scale of an ``upsample`` Sequential of conv + PixelShuffle stages (x3 once, or x2 n times)."""
    convs = [v for k, v in s.items() if re.fullmatch(r"upsample\.\d+\.weight", k) and v.ndim == 4]
    return 3 if s["upsample.0.weight"].shape[0] == 9 * num_feat else 2 ** len(convs)


def _edsr(s: StateDict) -> dict | None:
    if not {"conv_first.weight", "body.0.conv1.weight", "conv_after_body.weight", "upsample.0.weight"} <= s.keys():
        return None
    if "bn_after_body.weight" in s:  # SRResNet
        return None
    args = _trunk(s)
    # Residual scaling is not stored in the weights: EDSR (256 features) used 0.1, the baseline 1.
    return {**args, "upscale": _subpixel_scale(s, args["num_feat"]),
            "res_scale": 0.1 if args["num_feat"] >= 256 else 1.0}


def _msrresnet(s: StateDict) -> dict | None:
    if not {"conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight"} <= s.keys():
        return None
    args = _trunk(s)
    upscale = 4 if "upconv2.weight" in s else math.isqrt(s["upconv1.weight"].shape[0] // args["num_feat"])
    return {**args, "upscale": upscale}


def _srresnet(s: StateDict) -> dict | None:
    if not {"conv_first.weight", "body.0.bn1.weight", "bn_after_body.weight", "conv_last.weight"} <= s.keys():
        return None
    args = _trunk(s)
    return {**args, "upscale": _subpixel_scale(s, args["num_feat"])}


_THREE_CONVS = {f"conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}  # SRCNN and ESPCN


def _srcnn(s: StateDict) -> dict | None:
    if set(s) != _THREE_CONVS:
        return None
    w1, w2, w3 = s["conv1.weight"], s["conv2.weight"], s["conv3.weight"]
    if w3.shape[0] != w1.shape[1] or w1.shape[-1] != 9:  # ESPCN's conv3 has r^2 x channels
        return None
    return {"channels": (w1.shape[1], w1.shape[0], w2.shape[0], w3.shape[0]),
            "kernel_sizes": (w1.shape[-1], w2.shape[-1], w3.shape[-1])}


def _espcn(s: StateDict) -> dict | None:
    if set(s) != _THREE_CONVS:
        return None
    channels = s["conv1.weight"].shape[1]
    upscale = math.isqrt(s["conv3.weight"].shape[0] // channels)
    if upscale < 2 or upscale**2 * channels != s["conv3.weight"].shape[0]:
        return None
    return {"upscale": upscale, "num_channels": channels,
            "num_feat": (s["conv1.weight"].shape[0], s["conv2.weight"].shape[0])}


def _fsrcnn(s: StateDict) -> dict | None:
    if not {"first_part.0.weight", "mid_part.0.weight", "last_part.weight"} <= s.keys():
        return None
    convs = _count(s, r"mid_part\.(\d+)\.weight") // 2  # conv + PReLU per layer
    d, channels = s["first_part.0.weight"].shape[:2]
    return {"num_channels": channels, "d": d, "s": s["mid_part.0.weight"].shape[0], "m": convs - 2}


def _vgg_discriminator(s: StateDict) -> dict | None:
    if not {"conv0_0.weight", "bn0_1.weight", "linear1.weight"} <= s.keys():
        return None
    return {"num_in_ch": s["conv0_0.weight"].shape[1], "num_feat": s["conv0_0.weight"].shape[0],
            "input_size": 256 if "conv5_0.weight" in s else 128}


def _unet_discriminator(s: StateDict) -> dict | None:
    if not {"conv0.weight", "conv1.weight_orig", "conv9.weight"} <= s.keys():
        return None
    return {"num_in_ch": s["conv0.weight"].shape[1], "num_feat": s["conv0.weight"].shape[0]}


def _basicvsr(s: StateDict) -> dict | None:
    if not {"backward_trunk.main.0.weight", "fusion.weight", "spynet.basic_module.0.basic_module.0.weight"} <= s.keys():
        return None
    return {"num_feat": s["fusion.weight"].shape[0],
            "num_block": _count(s, r"backward_trunk\.main\.2\.(\d+)\.conv1\.weight")}


def _iconvsr(s: StateDict) -> dict | None:
    if not {"forward_fusion.weight", "edvr.fusion.feat_fusion.weight", "backward_trunk.main.0.weight"} <= s.keys():
        return None
    num_feat = s["backward_fusion.weight"].shape[0]
    frames = s["edvr.fusion.feat_fusion.weight"].shape[1] // num_feat
    return {"num_feat": num_feat, "num_block": _count(s, r"backward_trunk\.main\.2\.(\d+)\.conv1\.weight"),
            "temporal_padding": (frames - 1) // 2}


def _edvr(s: StateDict) -> dict | None:
    if "pcd_align.cas_dcnpack.weight" not in s or "conv_last.weight" not in s:
        return None
    num_feat = s["conv_l2_1.weight"].shape[0]
    with_tsa = "fusion.temporal_attn1.weight" in s
    fused = s["fusion.feat_fusion.weight" if with_tsa else "fusion.weight"].shape[1]
    first = s["predeblur.conv_first.weight" if "predeblur.conv_first.weight" in s else "conv_first.weight"]
    return {"num_in_ch": first.shape[1], "num_out_ch": s["conv_last.weight"].shape[0], "num_feat": num_feat,
            "num_frame": fused // num_feat,
            "deformable_groups": s["pcd_align.dcn_pack.l1.conv_offset.weight"].shape[0] // 27,
            "num_extract_block": _count(s, r"feature_extraction\.(\d+)\.conv1\.weight"),
            "num_reconstruct_block": _count(s, r"reconstruction\.(\d+)\.conv1\.weight"),
            "hr_in": "predeblur.stride_conv_hr1.weight" in s, "with_predeblur": "predeblur.conv_first.weight" in s,
            "with_tsa": with_tsa}


def _spynet(s: StateDict) -> dict | None:
    if any(k.startswith("spynet.") for k in s):
        return None
    if "basic_module.0.basic_module.0.conv.weight" in s:  # MMEditing / MMagic
        return {"levels": _count(s, r"basic_module\.(\d+)\.basic_module\.0\.conv\.weight"), "layout": "mmedit"}
    if "basic_module.0.basic_module.0.weight" not in s:
        return None
    return {"levels": _count(s, r"basic_module\.(\d+)\.basic_module\.0\.weight")}


def _vsrt(s: StateDict) -> dict | None:
    """VSR-Transformer. The frame count is not stored; the encoding's size tells 1-6 (taken as 5) from 7-12 (7)."""
    if "pos_embedding.penc.inv_freq" not in s or "transformer.layers.0.0.fn.norm.weight" not in s:
        return None
    num_feat, feat_size = s["transformer.layers.0.0.fn.norm.weight"].shape[:2]
    return {"image_ch": s["conv_first.weight"].shape[1], "num_feat": num_feat, "feat_size": feat_size,
            "num_frame": 5 if s["pos_embedding.penc.inv_freq"].numel() == 1 else 7,
            "num_extract_block": _count(s, r"feature_extraction\.(\d+)\.conv1\.weight"),
            "num_reconstruct_block": _count(s, r"reconstruction\.(\d+)\.conv1\.weight"),
            "depth": _count(s, r"transformer\.layers\.(\d+)\.0\.fn\.norm\.weight")}


# Order matters where layouts overlap: SRVGG's bare ``body.N`` keys are checked after the others.
DETECTORS: dict[str, Callable[[StateDict], dict | None]] = {
    "RRDBNet": _rrdbnet, "SRResNet": _srresnet, "EDSR": _edsr, "MSRResNet": _msrresnet,
    "FSRCNN": _fsrcnn, "SRCNN": _srcnn, "ESPCN": _espcn, "VGGStyleDiscriminator": _vgg_discriminator,
    "UNetDiscriminatorSN": _unet_discriminator, "BasicVSR": _basicvsr, "IconVSR": _iconvsr, "EDVR": _edvr,
    "SpyNet": _spynet, "VSRTransformer": _vsrt,
    "SRVGGNetCompact": _srvgg,
}


def normalize_layout(s: StateDict) -> tuple[StateDict, dict]:
    """Bring other official layouts to ours: (renamed state dict, constructor arguments they imply).

    - xinntao/ESRGAN's original ``model.N`` keys -> RRDBNet's.
    - MMagic's MSRResNet (``trunk_net``, ``upsample1.upsample_conv``): no activation after upsampling.
    - MMagic's EDSRNet (``upsample.N.upsample_conv``): works on [0, 1] images, so ``img_range=1``.
    """
    if "model.0.weight" in s and "model.1.sub.0.RDB1.conv1.0.weight" in s:
        return _rename_esrgan_original(s), {}
    if any(k.startswith("trunk_net.") for k in s) and "upsample1.upsample_conv.weight" in s:
        renamed = {re.sub(r"^trunk_net\.", "body.", re.sub(r"^upsample(\d)\.upsample_conv\.", r"upconv\1.", k)): v
                   for k, v in s.items()}
        return renamed, {"upsample_lrelu": False}
    if "upsample.0.upsample_conv.weight" in s and "conv_after_body.weight" in s:
        renamed = {re.sub(r"^upsample\.(\d+)\.upsample_conv\.", lambda m: f"upsample.{2 * int(m[1])}.", k): v
                   for k, v in s.items()}
        return renamed, {"img_range": 1.0}
    return s, {}


def _rename_esrgan_original(s: StateDict) -> StateDict:
    num_block = _count(s, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight")
    fixed = {"model.0": "conv_first", f"model.1.sub.{num_block}": "conv_body", "model.3": "conv_up1",
             "model.6": "conv_up2", "model.8": "conv_hr", "model.10": "conv_last"}
    out = {}
    for key, value in s.items():
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
        if m:
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            continue
        module, _, param = key.rpartition(".")
        out[f"{fixed.get(module, module)}.{param}"] = value
    return out


def detect(state: StateDict) -> tuple[str, dict] | None:
    """(architecture name, constructor kwargs) for a state dict in our layout, or None."""
    for arch, detector in DETECTORS.items():
        kwargs = detector(state)
        if kwargs is not None:
            return arch, kwargs
    return None
