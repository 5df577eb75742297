"""StyleGAN2's generator as GFPGAN uses it: Karras et al., "Analyzing and Improving the Image
Quality of StyleGAN", CVPR 2020.

Two versions with the layouts of GFPGAN's official code (TencentARC/GFPGAN, BasicSR's
``stylegan2_arch``), whose decoders GFPGAN modulates by spatial feature transforms (SFT):

- the original, whose custom CUDA ops are written here in plain PyTorch: ``fused_leaky_relu``
  (bias, leaky ReLU 0.2, gain sqrt 2), ``upfirdn2d`` (zero-insertion upsampling, padding, FIR
  filter, downsampling) for the [1, 3, 3, 1] blur, and equalised learning rate (weights scaled
  by 1/sqrt(fan-in) at run time);
- the "clean" one (GFPGAN v1.2-v1.4): bilinear resampling instead of the FIR filters, weights
  stored already scaled, plain ``nn.Linear`` modulation and ``nn.LeakyReLU``.

Both modulate and demodulate each convolution's weights per image (Sec. 2.2 of the paper). The
per-layer noise is the generator's stored ``noises.noiseN`` buffers (official inference with
``randomize_noise=False``), so that a network's output is a function of its input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT2 = math.sqrt(2)


def fused_leaky_relu(x: Tensor, bias: Tensor, negative_slope: float = 0.2, scale: float = SQRT2) -> Tensor:
    """StyleGAN2's ``fused_bias_act``: ``leaky_relu(x + bias, slope) * scale``, bias along dimension 1."""
    return F.leaky_relu(x + bias.view(1, -1, *[1] * (x.ndim - 2)), negative_slope) * scale


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """StyleGAN2's ``upfirdn2d`` on N x C x H x W: insert ``up - 1`` zeros after each sample, pad both
    axes by ``pad`` (negative crops), convolve each channel with ``kernel``, keep every ``down``-th sample."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(n, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = kernel.flip(0, 1).to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def resample_kernel(taps: tuple[int, ...]) -> Tensor:
    """The separable 2-D FIR kernel of 1-D ``taps``, normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


class Blur(nn.Module):
    """The FIR filter around a strided or transposed convolution (``UpFirDnSmooth`` in BasicSR)."""

    def __init__(self, taps: tuple[int, ...], pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.pad = pad
        self.register_buffer("kernel", resample_kernel(taps) * gain, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 upsampling by zero insertion and the FIR filter (``UpFirDnUpsample``; ToRGB's skip path)."""

    def __init__(self, taps: tuple[int, ...], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", resample_kernel(taps) * factor**2, persistent=False)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class ScaledLeakyReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, 0.2) * SQRT2


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; ``activation="fused_lrelu"`` adds the bias inside it."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, bias_init_val: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None):
        super().__init__()
        self.lr_mul, self.activation = lr_mul, activation
        self.scale = lr_mul / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_channels,), float(bias_init_val))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation == "fused_lrelu":
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, bias_init_val: float = 0.0):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.full((out_channels,), float(bias_init_val))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class ConvLayer(nn.Sequential):
    """[FIR blur,] equalised conv (stride 2 when ``downsample``), [fused or scaled leaky ReLU]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 taps: tuple[int, ...] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            p = len(taps) - 2 + kernel_size - 1
            layers.append(Blur(taps, ((p + 1) // 2, p // 2)))
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=2 if downsample else 1,
                                  padding=0 if downsample else kernel_size // 2, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels) if bias else ScaledLeakyReLU())
        super().__init__(*layers)


class ResBlock(nn.Module):
    """The StyleGAN2 discriminator's residual block (x1/2): GFPGANv1's encoder."""

    def __init__(self, in_channels: int, out_channels: int, taps: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True, taps=taps)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, taps=taps, bias=False, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class NormStyleCode(nn.Module):
    """Pixel norm of the style codes over dimension 1."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


def modulated_weight(weight: Tensor, style: Tensor, demodulate: bool, eps: float = 1e-8) -> Tensor:
    """Per-image weights (N x out x in x k x k) from ``weight`` (1 x out x in x k x k) and N x in styles."""
    w = weight * style[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum((2, 3, 4), keepdim=True) + eps)
    return w


def grouped_conv(x: Tensor, weight: Tensor, padding: int = 0) -> Tensor:
    """Each image of ``x`` convolved with its own weights (N x out x in x k x k)."""
    n, out_ch, in_ch, k, _ = weight.shape
    out = F.conv2d(x.reshape(1, n * in_ch, *x.shape[2:]), weight.reshape(n * out_ch, in_ch, k, k),
                   padding=padding, groups=n)
    return out.view(n, out_ch, *out.shape[2:])


class ModulatedConv2d(nn.Module):
    """The original modulated conv: equalised weights; x2 upsampling by a transposed conv and the blur."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False, taps: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            p = len(taps) - 2 - (kernel_size - 1)
            self.smooth = Blur(taps, ((p + 1) // 2 + 1, p // 2 + 1), gain=4)
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.modulation = EqualLinear(num_style_feat, in_channels, bias_init_val=1)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.padding = kernel_size // 2

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        weight = modulated_weight(self.scale * self.weight, self.modulation(style), self.demodulate)
        if not self.upsample:
            return grouped_conv(x, weight, self.padding)
        n, out_ch, in_ch, k, _ = weight.shape
        out = F.conv_transpose2d(x.reshape(1, n * in_ch, *x.shape[2:]),
                                 weight.transpose(1, 2).reshape(n * in_ch, out_ch, k, k), stride=2, groups=n)
        return self.smooth(out.view(n, out_ch, *out.shape[2:]))


class ModulatedConv2dClean(nn.Module):
    """The clean modulated conv: weights stored scaled, bilinear x2 upsampling before the conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.demodulate, self.upsample = demodulate, upsample
        self.modulation = nn.Linear(num_style_feat, in_channels)
        nn.init.kaiming_normal_(self.modulation.weight, nonlinearity="linear")
        nn.init.ones_(self.modulation.bias)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
                                   / math.sqrt(in_channels * kernel_size**2))
        self.padding = kernel_size // 2

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        weight = modulated_weight(self.weight, self.modulation(style), self.demodulate)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return grouped_conv(x, weight, self.padding)


class StyleConv(nn.Module):
    """Modulated conv, noise (learned strength ``weight``), fused bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool = False,
                 taps: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, upsample=upsample,
                                              taps=taps)
        self.weight = nn.Parameter(torch.zeros(1))
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        return self.activate(self.modulated_conv(x, style) + self.weight * noise)


class StyleConvClean(nn.Module):
    """Clean modulated conv (times sqrt 2), noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool = False):
        super().__init__()
        self.modulated_conv = ModulatedConv2dClean(in_channels, out_channels, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        out = self.modulated_conv(x, style) * SQRT2 + self.weight * noise + self.bias
        return F.leaky_relu(out, 0.2)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB, plus the upsampled RGB of the coarser level."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True, clean: bool = False,
                 taps: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        conv = ModulatedConv2dClean if clean else ModulatedConv2d
        self.modulated_conv = conv(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clean = clean
        if upsample and not clean:
            self.upsample = Upsample(taps)

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is None:
            return out
        if self.clean:
            return out + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        return out + self.upsample(skip)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.weight.expand(batch, -1, -1, -1)


def stylegan2_channels(channel_multiplier: int | float, narrow: float = 1) -> dict[int, int]:
    """Feature channels at each resolution (StyleGAN2's config F, times ``narrow``)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {res: int(ch * narrow) for res, ch in base.items()}


class StyleGAN2Generator(nn.Module):
    """StyleGAN2's synthesis network with optional SFT conditions (GFPGAN's ``StyleGAN2GeneratorSFT``
    and, with ``clean``, ``StyleGAN2GeneratorCSFT``); the mapping MLP is ``style_mlp``.

    ``forward(styles, conditions)``: N x num_style_feat codes (repeated for every layer) or
    N x num_latent x num_style_feat (one per layer); ``conditions`` alternate SFT scale and shift
    for each resolution from 8 up, applied after the first conv of the level (to the second half
    of the channels if ``sft_half``). Returns the N x 3 x out_size x out_size image in [-1, 1].
    """

    def __init__(self, out_size: int, num_style_feat: int = 512, num_mlp: int = 8,
                 channel_multiplier: int | float = 2, narrow: float = 1, sft_half: bool = False,
                 clean: bool = False, taps: tuple[int, ...] = (1, 3, 3, 1), lr_mlp: float = 0.01):
        super().__init__()
        self.sft_half = sft_half
        layers: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            if clean:
                layers += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(0.2)]
            else:
                layers.append(EqualLinear(num_style_feat, num_style_feat, lr_mul=lr_mlp, activation="fused_lrelu"))
        self.style_mlp = nn.Sequential(*layers)

        channels = stylegan2_channels(channel_multiplier, narrow)
        self.log_size = int(math.log2(out_size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.num_latent = self.log_size * 2 - 2

        def style_conv(cin: int, cout: int, upsample: bool) -> nn.Module:
            if clean:
                return StyleConvClean(cin, cout, num_style_feat, upsample=upsample)
            return StyleConv(cin, cout, num_style_feat, upsample=upsample, taps=taps)

        self.constant_input = ConstantInput(channels[4])
        self.style_conv1 = style_conv(channels[4], channels[4], upsample=False)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False, clean=clean, taps=taps)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, res, res))
        in_ch = channels[4]
        for level in range(3, self.log_size + 1):
            out_ch = channels[2**level]
            self.style_convs.append(style_conv(in_ch, out_ch, upsample=True))
            self.style_convs.append(style_conv(out_ch, out_ch, upsample=False))
            self.to_rgbs.append(ToRGB(out_ch, num_style_feat, upsample=True, clean=clean, taps=taps))
            in_ch = out_ch

    def forward(self, styles: Tensor, conditions: list[Tensor] | tuple[Tensor, ...] = (),
                input_is_latent: bool = True) -> Tensor:
        if not input_is_latent:
            styles = self.style_mlp(styles)
        latent = styles if styles.ndim == 3 else styles.unsqueeze(1).expand(-1, self.num_latent, -1)
        noise = [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1
            out = self.style_convs[2 * j](out, latent[:, i], noise[i])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:
                    same, sft = out.split(out.shape[1] // 2, dim=1)
                    out = torch.cat([same, sft * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = self.style_convs[2 * j + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip
