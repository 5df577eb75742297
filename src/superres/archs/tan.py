"""The temporal adaptive network: Liu, Yang, Wang, Chang, Wang, Huang and Liu, "Robust Video
Super-Resolution with Learned Temporal Dynamics", ICCV 2017.

Several SR inference branches look at windows of 1, 3, 5, ... consecutive frames around the
reference (each an ESPCN-style network with early fusion of its frames), and a temporal
modulation branch on the widest window predicts, per HR pixel, softmax weights that mix the
branches' estimates: the network chooses per pixel how much temporal context to trust. Before
that, neighbours are aligned to the reference by a spatial alignment network (a localisation
net predicting an affine warp per neighbour, initialised to the identity and trained jointly),
or by "rectified optical flow" (an integer translation per patch, from a flow estimator, so no
pixel is interpolated), or not at all. Training follows the paper: every inference branch on its
own first (``forward(x, branches=True)`` gives their estimates; ``train.branches_first``), then the
whole network. No official code exists; names follow the paper.
Input N x T x C x H x W in [0, 1] with T = the widest window; output N x C x sH x sW.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.spec import ALL_PRECISIONS, ArchSpec, ModelFacts, StateDict, VideoRun, count_indices


class SRBranch(nn.Module):
    """ESPCN-style inference branch on ``frames`` stacked frames (early fusion)."""

    def __init__(self, frames: int, num_in_ch: int, out_channels: int, scale: int, num_feat: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(frames * num_in_ch, num_feat[0], 5, 1, 2)
        self.conv2 = nn.Conv2d(num_feat[0], num_feat[1], 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat[1], out_channels * scale**2, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.pixel_shuffle(self.conv3(torch.tanh(self.conv2(torch.tanh(self.conv1(x))))))


class SpatialAlignment(nn.Module):
    """Localisation net: (reference, neighbour) -> affine warp of the neighbour onto the reference."""

    def __init__(self, num_in_ch: int = 1, num_feat: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2 * num_in_ch, num_feat, 5, 2, 2), nn.ReLU(),
            nn.Conv2d(num_feat, num_feat, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(num_feat, num_feat, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.theta = nn.Linear(num_feat, 6)
        nn.init.zeros_(self.theta.weight)  # start at the identity warp
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))

    def forward(self, ref: Tensor, nbr: Tensor) -> Tensor:
        theta = self.theta(self.features(torch.cat([ref, nbr], 1)).flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(nbr.shape), align_corners=False)
        return F.grid_sample(nbr, grid, padding_mode="border", align_corners=False)


def rectified_flow_align(nbr: Tensor, flow: Tensor, patch: int = 16) -> Tensor:
    """Move each ``patch`` x ``patch`` block of ``nbr`` by the rounded mean of ``flow`` over it.

    ``flow`` (N x 2 x H x W, x then y) maps reference pixels to neighbour pixels; sampling at
    integer offsets keeps the neighbour's pixel values exact (no interpolation blur).
    """
    n, _, h, w = nbr.shape
    shift = F.avg_pool2d(flow, patch, patch, ceil_mode=True).round()
    shift = F.interpolate(shift, scale_factor=patch, mode="nearest")[..., :h, :w]
    ys, xs = torch.meshgrid(torch.arange(h, device=nbr.device), torch.arange(w, device=nbr.device), indexing="ij")
    x_src = (xs + shift[:, 0]).long().clamp(0, w - 1)
    y_src = (ys + shift[:, 1]).long().clamp(0, h - 1)
    index = (y_src * w + x_src).view(n, 1, -1).expand(-1, nbr.shape[1], -1)
    return nbr.flatten(2).gather(2, index).view_as(nbr)


class TemporalAdaptiveNet(nn.Module):
    """``windows`` inference branches (odd sizes), mixed per pixel by the temporal modulation branch.

    ``alignment``: "learned" (spatial alignment network), "rectified" (rectified optical flow
    from a SPyNet, given as ``flow_net`` or built untrained) or "none".
    """

    def __init__(self, scale: int = 4, num_in_ch: int = 1, windows: tuple[int, ...] = (1, 3, 5),
                 num_feat: tuple[int, int] = (64, 32), alignment: str = "learned", patch: int = 16):
        super().__init__()
        if any(w % 2 == 0 for w in windows) or list(windows) != sorted(set(windows)):
            raise ValueError(f"windows must be increasing odd frame counts, got {windows}")
        if alignment not in ("learned", "rectified", "none"):
            raise ValueError(f"alignment must be learned, rectified or none, got {alignment!r}")
        self.scale, self.windows, self.alignment, self.patch = scale, tuple(windows), alignment, patch
        frames = windows[-1]
        self.branches = nn.ModuleList(SRBranch(w, num_in_ch, num_in_ch, scale, num_feat) for w in windows)
        self.modulation = SRBranch(frames, num_in_ch, len(windows), scale, num_feat)
        if alignment == "learned":
            self.align_net = SpatialAlignment(num_in_ch)
        elif alignment == "rectified":
            from superres.archs.spynet import SpyNet

            self.flow_net = SpyNet()

    def align(self, x: Tensor) -> Tensor:
        """Warp every frame onto the centre one (N x T x C x H x W)."""
        if self.alignment == "none":
            return x
        t, c = x.shape[1:3]
        center = t // 2
        ref = x[:, center]
        out = []
        for i in range(t):
            if i == center:
                out.append(ref)
            elif self.alignment == "learned":
                out.append(self.align_net(ref, x[:, i]))
            else:
                rgb = (lambda f: f.expand(-1, 3, -1, -1)) if c == 1 else (lambda f: f)
                out.append(rectified_flow_align(x[:, i], self.flow_net(rgb(ref), rgb(x[:, i])), self.patch))
        return torch.stack(out, dim=1)

    def forward(self, x: Tensor, branches: bool = False) -> Tensor:
        """The mixed HR estimate; ``branches=True``: every inference branch's own estimate instead
        (N x branches x C x sH x sW), which the paper's first training stage fits one by one."""
        t = x.shape[1]
        if t != self.windows[-1]:
            raise ValueError(f"expected {self.windows[-1]} frames (the widest window), got {t}")
        x = self.align(x)
        center = t // 2
        estimates = torch.stack([branch(x[:, center - k // 2:center + k // 2 + 1].flatten(1, 2))
                                 for k, branch in zip(self.windows, self.branches, strict=True)], dim=1)
        if branches:
            return estimates
        weights = torch.softmax(self.modulation(x.flatten(1, 2)), dim=1).unsqueeze(2)  # N x branches x 1 x sH x sW
        return (weights * estimates).sum(1)


def _detect(s: StateDict) -> dict | None:
    if not {"branches.0.conv1.weight", "modulation.conv3.weight"} <= s.keys():
        return None
    count = count_indices(s, r"branches\.(\d+)\.conv1\.weight")
    scale = math.isqrt(s["modulation.conv3.weight"].shape[0] // count)  # a weight per branch per HR pixel
    num_in_ch = s["branches.0.conv3.weight"].shape[0] // scale**2
    windows = tuple(s[f"branches.{i}.conv1.weight"].shape[1] // num_in_ch for i in range(count))
    alignment = ("learned" if "align_net.theta.weight" in s
                 else "rectified" if any(k.startswith("flow_net.") for k in s) else "none")
    return {"scale": scale, "num_in_ch": num_in_ch, "windows": windows, "alignment": alignment,
            "num_feat": (s["branches.0.conv1.weight"].shape[0], s["branches.0.conv2.weight"].shape[0])}


def _facts(kw: dict) -> ModelFacts:
    # Aligned neighbours are resampled from grids of pixel positions (an affine grid, or SPyNet's
    # flow warping), which half precision cannot hold: bf16 on CPU gives NaN on 384x384 frames.
    precisions = ALL_PRECISIONS if kw["alignment"] == "none" else ("fp32",)
    return ModelFacts("video", kw["scale"], kw["num_in_ch"], kw["num_in_ch"], size_multiple=4,
                      precisions=precisions, video=VideoRun("window", max(kw["windows"])))


ARCHS = (ArchSpec(TemporalAdaptiveNet, _detect, _facts),)
