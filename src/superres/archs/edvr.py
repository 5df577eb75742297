"""EDVR: Wang, Chan, Yu, Dong and Loy, "EDVR: Video Restoration with Enhanced Deformable
Convolutional Networks", CVPR Workshops 2019.

Features of every frame are aligned to the centre frame by PCD (a 3-level pyramid of modulated
deformable convolutions, coarse to fine, then a cascading refinement), fused by TSA (temporal
attention from each frame's similarity to the centre frame, then pyramid spatial attention),
reconstructed by residual blocks and upsampled x4 on top of a bilinear upsampling of the centre
frame. An optional PreDeblur module (and ``hr_in`` for deblurring at the input size) comes first.
Deformable convolutions are ``torchvision.ops.deform_conv2d``. Key names follow BasicSR's
``EDVR``: EDVR-M (64 features, 10 reconstruction blocks) has 3,300,131 parameters, EDVR-L
(128, 40) 20,633,827.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.blocks import ResidualBlockNoBN
from superres.archs.spec import ArchSpec, ModelFacts, StateDict, VideoRun, count_indices


def _blocks(n: int, num_feat: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(n)))


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class DCNv2Pack(nn.Module):
    """Modulated deformable 3x3 convolution (DCNv2) whose offsets and masks come from other features."""

    def __init__(self, in_channels: int, out_channels: int, deformable_groups: int = 8):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.conv_offset = nn.Conv2d(in_channels, deformable_groups * 3 * 9, 3, 1, 1)
        nn.init.zeros_(self.conv_offset.weight)  # start as a plain convolution
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor, feat: Tensor) -> Tensor:
        from torchvision.ops import deform_conv2d  # here, not at import: torchvision.ops costs seconds to import

        o1, o2, mask = torch.chunk(self.conv_offset(feat), 3, dim=1)
        return deform_conv2d(x, torch.cat((o1, o2), dim=1), self.weight, self.bias, padding=1,
                             mask=torch.sigmoid(mask))


class PCDAlignment(nn.Module):
    """Pyramid, Cascading and Deformable alignment of a neighbour's 3 feature levels to the reference's."""

    def __init__(self, num_feat: int = 64, deformable_groups: int = 8):
        super().__init__()
        levels = ("l3", "l2", "l1")
        self.offset_conv1 = nn.ModuleDict({lv: nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1) for lv in levels})
        self.offset_conv2 = nn.ModuleDict({lv: nn.Conv2d(num_feat * (1 if lv == "l3" else 2), num_feat, 3, 1, 1)
                                           for lv in levels})
        self.offset_conv3 = nn.ModuleDict({lv: nn.Conv2d(num_feat, num_feat, 3, 1, 1) for lv in ("l2", "l1")})
        self.dcn_pack = nn.ModuleDict({lv: DCNv2Pack(num_feat, num_feat, deformable_groups) for lv in levels})
        self.feat_conv = nn.ModuleDict({lv: nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1) for lv in ("l2", "l1")})
        self.cas_offset_conv1 = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        self.cas_offset_conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.cas_dcnpack = DCNv2Pack(num_feat, num_feat, deformable_groups)
        self.lrelu = nn.LeakyReLU(0.1)

    def forward(self, nbr: list[Tensor], ref: list[Tensor]) -> Tensor:
        up_offset = up_feat = None
        for i in (3, 2, 1):  # coarse to fine
            lv = f"l{i}"
            offset = self.lrelu(self.offset_conv1[lv](torch.cat([nbr[i - 1], ref[i - 1]], 1)))
            if i == 3:
                offset = self.lrelu(self.offset_conv2[lv](offset))
            else:
                offset = self.lrelu(self.offset_conv2[lv](torch.cat([offset, up_offset], 1)))
                offset = self.lrelu(self.offset_conv3[lv](offset))
            feat = self.dcn_pack[lv](nbr[i - 1], offset)
            if i < 3:
                feat = self.feat_conv[lv](torch.cat([feat, up_feat], 1))
            if i > 1:
                feat = self.lrelu(feat)
                up_offset, up_feat = _up2(offset) * 2, _up2(feat)  # offsets double with the resolution
        offset = torch.cat([feat, ref[0]], 1)
        offset = self.lrelu(self.cas_offset_conv2(self.lrelu(self.cas_offset_conv1(offset))))
        return self.lrelu(self.cas_dcnpack(feat, offset))


class TSAFusion(nn.Module):
    """Temporal and Spatial Attention fusion of N x T x C x H x W aligned features into N x C x H x W."""

    def __init__(self, num_feat: int = 64, num_frame: int = 5, center_frame_idx: int = 2):
        super().__init__()
        self.center_frame_idx = center_frame_idx
        self.temporal_attn1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.temporal_attn2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.feat_fusion = nn.Conv2d(num_frame * num_feat, num_feat, 1, 1)
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg_pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.spatial_attn1 = nn.Conv2d(num_frame * num_feat, num_feat, 1)
        self.spatial_attn2 = nn.Conv2d(num_feat * 2, num_feat, 1)
        self.spatial_attn3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.spatial_attn4 = nn.Conv2d(num_feat, num_feat, 1)
        self.spatial_attn5 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.spatial_attn_l1 = nn.Conv2d(num_feat, num_feat, 1)
        self.spatial_attn_l2 = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        self.spatial_attn_l3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.spatial_attn_add1 = nn.Conv2d(num_feat, num_feat, 1)
        self.spatial_attn_add2 = nn.Conv2d(num_feat, num_feat, 1)
        self.lrelu = nn.LeakyReLU(0.1)

    def _pool(self, x: Tensor) -> Tensor:
        return torch.cat([self.max_pool(x), self.avg_pool(x)], 1)

    def forward(self, aligned: Tensor) -> Tensor:
        b, t, c, h, w = aligned.shape
        # temporal attention: each frame weighted per pixel by its similarity to the centre frame
        ref = self.temporal_attn1(aligned[:, self.center_frame_idx])
        emb = self.temporal_attn2(aligned.reshape(-1, c, h, w)).view(b, t, -1, h, w)
        prob = torch.sigmoid((emb * ref.unsqueeze(1)).sum(2))  # b x t x h x w
        aligned = aligned.reshape(b, -1, h, w) * prob.unsqueeze(2).expand(b, t, c, h, w).reshape(b, -1, h, w)
        feat = self.lrelu(self.feat_fusion(aligned))
        # spatial attention on two pyramid levels
        attn = self.lrelu(self.spatial_attn1(aligned))
        attn = self.lrelu(self.spatial_attn2(self._pool(attn)))
        level = self.lrelu(self.spatial_attn_l1(attn))
        level = self.lrelu(self.spatial_attn_l2(self._pool(level)))
        level = _up2(self.lrelu(self.spatial_attn_l3(level)))
        attn = self.lrelu(self.spatial_attn3(attn)) + level
        attn = self.spatial_attn5(_up2(self.lrelu(self.spatial_attn4(attn))))
        attn_add = self.spatial_attn_add2(self.lrelu(self.spatial_attn_add1(attn)))
        return feat * torch.sigmoid(attn) * 2 + attn_add


class PredeblurModule(nn.Module):
    """EDVR's pre-deblurring: a small pyramid of residual blocks before alignment."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, hr_in: bool = False):
        super().__init__()
        self.hr_in = hr_in
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        if hr_in:  # work at 1/4 of the input size
            self.stride_conv_hr1 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
            self.stride_conv_hr2 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.stride_conv_l2 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.stride_conv_l3 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.resblock_l3 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_1 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_2 = ResidualBlockNoBN(num_feat)
        self.resblock_l1 = nn.ModuleList(ResidualBlockNoBN(num_feat) for _ in range(5))
        self.lrelu = nn.LeakyReLU(0.1)

    def forward(self, x: Tensor) -> Tensor:
        l1 = self.lrelu(self.conv_first(x))
        if self.hr_in:
            l1 = self.lrelu(self.stride_conv_hr2(self.lrelu(self.stride_conv_hr1(l1))))
        l2 = self.lrelu(self.stride_conv_l2(l1))
        l3 = self.lrelu(self.stride_conv_l3(l2))
        l2 = self.resblock_l2_1(l2) + _up2(self.resblock_l3(l3))
        l2 = _up2(self.resblock_l2_2(l2))
        for block in self.resblock_l1[:2]:
            l1 = block(l1)
        l1 = l1 + l2
        for block in self.resblock_l1[2:]:
            l1 = block(l1)
        return l1


class _AlignAndFuse(nn.Module):
    """The part EDVR and IconVSR's keyframe extractor share: feature pyramid, PCD alignment, fusion."""

    def _build(self, num_feat: int, num_frame: int, deformable_groups: int, with_tsa: bool = True) -> None:
        self.conv_l2_1 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.conv_l2_2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_l3_1 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.conv_l3_2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.pcd_align = PCDAlignment(num_feat, deformable_groups)
        self.with_tsa = with_tsa
        if with_tsa:
            self.fusion = TSAFusion(num_feat, num_frame, self.center_frame_idx)
        else:
            self.fusion = nn.Conv2d(num_frame * num_feat, num_feat, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1)

    def align_and_fuse(self, l1: Tensor, b: int, t: int) -> Tensor:
        """Level-1 features of b x t frames ((b*t) x C x H x W) -> fused centre features (b x C x H x W)."""
        l2 = self.lrelu(self.conv_l2_2(self.lrelu(self.conv_l2_1(l1))))
        l3 = self.lrelu(self.conv_l3_2(self.lrelu(self.conv_l3_1(l2))))
        levels = [f.view(b, t, -1, *f.shape[-2:]) for f in (l1, l2, l3)]
        ref = [f[:, self.center_frame_idx] for f in levels]
        aligned = torch.stack([self.pcd_align([f[:, i] for f in levels], ref) for i in range(t)], dim=1)
        return self.fusion(aligned if self.with_tsa else aligned.flatten(1, 2))


class EDVRFeatureExtractor(_AlignAndFuse):
    """EDVR up to fusion (64 features, 5 extraction blocks), as IconVSR uses it on keyframes."""

    def __init__(self, num_input_frame: int = 5, num_feat: int = 64):
        super().__init__()
        self.center_frame_idx = num_input_frame // 2
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.feature_extraction = _blocks(5, num_feat)
        self._build(num_feat, num_input_frame, deformable_groups=8)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c, h, w = x.shape
        l1 = self.feature_extraction(self.lrelu(self.conv_first(x.reshape(-1, c, h, w))))
        return self.align_and_fuse(l1, b, t)


class EDVR(_AlignAndFuse):
    """EDVR x4 on ``num_frame`` frames (N x T x C x H x W, H and W multiples of 4; of 16 with ``hr_in``)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_frame: int = 5,
                 deformable_groups: int = 8, num_extract_block: int = 5, num_reconstruct_block: int = 10,
                 center_frame_idx: int | None = None, hr_in: bool = False, with_predeblur: bool = False,
                 with_tsa: bool = True):
        super().__init__()
        self.center_frame_idx = num_frame // 2 if center_frame_idx is None else center_frame_idx
        self.hr_in, self.with_predeblur = hr_in, with_predeblur
        if with_predeblur:
            self.predeblur = PredeblurModule(num_in_ch, num_feat, hr_in)
            self.conv_1x1 = nn.Conv2d(num_feat, num_feat, 1, 1)
        else:
            self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.feature_extraction = _blocks(num_extract_block, num_feat)
        self._build(num_feat, num_frame, deformable_groups, with_tsa)
        self.reconstruction = _blocks(num_reconstruct_block, num_feat)
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, num_out_ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c, h, w = x.shape
        multiple = 16 if self.hr_in else 4
        if h % multiple or w % multiple:
            raise ValueError(f"EDVR needs frame sizes divisible by {multiple}, got {w}x{h}")
        center = x[:, self.center_frame_idx]
        if self.with_predeblur:
            l1 = self.conv_1x1(self.predeblur(x.reshape(-1, c, h, w)))
        else:
            l1 = self.lrelu(self.conv_first(x.reshape(-1, c, h, w)))
        out = self.reconstruction(self.align_and_fuse(self.feature_extraction(l1), b, t))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        base = center if self.hr_in else F.interpolate(center, scale_factor=4, mode="bilinear", align_corners=False)
        return out + base


def _detect(s: StateDict) -> dict | None:
    if "pcd_align.cas_dcnpack.weight" not in s or "conv_last.weight" not in s:
        return None
    num_feat = s["conv_l2_1.weight"].shape[0]
    with_tsa = "fusion.temporal_attn1.weight" in s
    fused = s["fusion.feat_fusion.weight" if with_tsa else "fusion.weight"].shape[1]
    first = s["predeblur.conv_first.weight" if "predeblur.conv_first.weight" in s else "conv_first.weight"]
    return {"num_in_ch": first.shape[1], "num_out_ch": s["conv_last.weight"].shape[0], "num_feat": num_feat,
            "num_frame": fused // num_feat,
            "deformable_groups": s["pcd_align.dcn_pack.l1.conv_offset.weight"].shape[0] // 27,
            "num_extract_block": count_indices(s, r"feature_extraction\.(\d+)\.conv1\.weight"),
            "num_reconstruct_block": count_indices(s, r"reconstruction\.(\d+)\.conv1\.weight"),
            "hr_in": "predeblur.stride_conv_hr1.weight" in s, "with_predeblur": "predeblur.conv_first.weight" in s,
            "with_tsa": with_tsa}


def _facts(kw: dict) -> ModelFacts:
    # hr_in (deblurring): the input is reduced x4 first and the output has the input's size.
    multiple = 16 if kw["hr_in"] else 4
    # fp32 only: torchvision's deform_conv2d has no bf16 kernel (CPU: "deformable_im2col" not
    # implemented), and in fp16 its sampling positions (pixel coordinates) lose sub-pixel precision.
    return ModelFacts("video", 1 if kw["hr_in"] else 4, kw["num_in_ch"], kw["num_out_ch"], size_multiple=multiple,
                      min_size=multiple, precisions=("fp32",), video=VideoRun("window", kw["num_frame"]))


ARCHS = (ArchSpec(EDVR, _detect, _facts),)
