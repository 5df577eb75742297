"""Face restorers against their reference implementations, copies of the official code: spandrel 0.4.2's
GFPGAN (v1 and clean) and RestoreFormer, spandrel_extra_arches 0.2.0's CodeFormer.

Each reference's random weights are saved in the official checkpoint layout (``{"params_ema": ...}``,
``torch.save``) and read by ``load_model`` with no hints: detected, loaded with strict keys, and the
output equals the reference's (its [-1, 1] images mapped to [0, 1] and clamped, as the official
scripts do). The released 512 configurations load and have the official parameter counts; the
function is compared at 512 for CodeFormer (its reference has no other size) and on small
configurations of the others (the same code at other widths and depths).
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from superres.archs.spec import ModelFacts
from superres.zoo import create_model, load_model

spandrel = pytest.importorskip("spandrel")

# Parameters of the released networks (the official code's, built here by the references; the GFPGAN
# decoders also hold 699,024 noise values in buffers).
OFFICIAL_PARAMS = {"GFPGANv1Clean": 86_444_252, "GFPGANv1": 76_207_244, "RestoreFormer": 72_680_003,
                   "CodeFormer": 94_112_707}
# fp32 outputs in [0, 1]: the acceptance bound; the measured differences are below 1e-5.
TOL = 1e-4


def _gfpgan_module(name: str):
    from spandrel.architectures.GFPGAN.__arch import fused_act, gfpganv1_arch, gfpganv1_clean_arch

    return {"GFPGANv1Clean": gfpganv1_clean_arch, "GFPGANv1": gfpganv1_arch, "fused_act": fused_act}[name]


class _FusedBiasAct:
    """StyleGAN2's CUDA ``fused_bias_act`` kernel (forward, leaky ReLU: act 3, grad 0), element by element
    as the kernel writes it, so that the reference GFPGANv1 runs on the CPU."""

    @staticmethod
    def fused_bias_act(x, bias, refer, act, grad, alpha, scale):
        assert (act, grad) == (3, 0) and refer.numel() == 0
        if bias.numel():
            x = x + bias.view(1, -1, *[1] * (x.ndim - 2))
        return torch.where(x > 0, x, x * alpha) * scale


@pytest.fixture
def fused_ops(monkeypatch):
    monkeypatch.setattr(_gfpgan_module("fused_act"), "fused_act_ext", _FusedBiasAct)


def _reference(arch: str, **kwargs) -> torch.nn.Module:
    if arch.startswith("GFPGAN"):  # the released models' settings (GFPGAN's inference script)
        kwargs = {"out_size": 512, "channel_multiplier": 1 if arch == "GFPGANv1" else 2, "input_is_latent": True,
                  "different_w": True, "sft_half": True, **kwargs}
        return getattr(_gfpgan_module(arch), arch)(**kwargs)
    if arch == "RestoreFormer":
        from spandrel.architectures.RestoreFormer.__arch.restoreformer_arch import RestoreFormer

        return RestoreFormer(**kwargs)
    codeformer = pytest.importorskip("spandrel_extra_arches.architectures.CodeFormer.__arch.codeformer")
    return codeformer.CodeFormer(**kwargs)


def _randomized(ref: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The reference's state dict, every value perturbed (so that no zero-initialised path is idle); the
    GFPGAN noise strengths large enough that the noise buffers matter."""
    torch.manual_seed(seed)
    state = ref.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            value.add_(torch.randn_like(value) * 0.01)
            if re.fullmatch(r"stylegan_decoder\.(style_conv1|style_convs\.\d+)\.weight", key):
                value.fill_(0.3)
    ref.eval()
    return state


def _saved(tmp_path, state: dict) -> str:
    path = tmp_path / "official.pth"
    torch.save({"params_ema": state}, path)
    return path


def _unit(y: torch.Tensor) -> torch.Tensor:
    return (y.clamp(-1, 1) + 1) / 2


def _mid_range(y: torch.Tensor) -> float:
    """Fraction of values the clamp leaves alone: a comparison of saturated outputs would prove little."""
    return ((y > 0.01) & (y < 0.99)).float().mean().item()


SMALL_GFPGAN = {"out_size": 64, "num_style_feat": 32, "num_mlp": 2, "narrow": 0.25, "channel_multiplier": 1}


@pytest.mark.parametrize("arch", ["GFPGANv1Clean", "GFPGANv1"])
@pytest.mark.parametrize("variant", [{}, {"sft_half": False, "different_w": False}])
def test_gfpgan_matches_reference(tmp_path, fused_ops, arch, variant):
    kwargs = {**SMALL_GFPGAN, **variant}
    ref = _reference(arch, **kwargs)
    desc = load_model(_saved(tmp_path, _randomized(ref)))
    assert desc.arch == arch and desc.kwargs == create_model(arch, **kwargs).kwargs
    assert desc.facts == ModelFacts("face", 1, 3, 3, size_multiple=64, min_size=64, precisions=("fp32", "bf16"))

    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = _unit(ref(x * 2 - 1, return_rgb=False, randomize_noise=False)[0])
        fresh_noise = _unit(ref(x * 2 - 1, return_rgb=False, randomize_noise=True)[0])
        out = desc.module(x)
    assert out.shape == x.shape and _mid_range(expected) > 0.2
    assert (out - expected).abs().max() <= TOL
    assert (fresh_noise - expected).abs().max() > 100 * TOL  # the stored noise is what makes them equal


def test_restoreformer_matches_reference(tmp_path):
    kwargs = {"n_embed": 64, "embed_dim": 32, "ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "z_channels": 32}
    ref = _reference("RestoreFormer", **kwargs, resolution=32)
    state = _randomized(ref)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # codebook entries near the features of 64 positions: the lookup varies across the image
        z = ref.quant_conv(ref.encoder(x * 2 - 1)["out"]).permute(0, 2, 3, 1).reshape(-1, 32)
        entries = z[torch.randperm(len(z))[:64]]
        state["quantize.embedding.weight"].copy_(entries + 0.1 * entries.std() * torch.randn_like(entries))
    desc = load_model(_saved(tmp_path, state))
    assert desc.arch == "RestoreFormer" and desc.kwargs == create_model("RestoreFormer", **kwargs).kwargs
    assert desc.min_size == desc.size_multiple == 32  # 16 x 16 at the lowest of two levels

    with torch.no_grad():
        expected = _unit(ref(x * 2 - 1)[0])
        out = desc.module(x)
        codes = ref.encode(x * 2 - 1)[2][2].unique().numel()
    assert codes > 16 and _mid_range(expected) > 0.2
    assert (out - expected).abs().max() <= TOL


@pytest.mark.slow  # two forward passes of a 94M-parameter network at 512 x 512 (about 10 s on 2 cores)
def test_codeformer_matches_reference_at_512(tmp_path):
    with warnings.catch_warnings():  # the reference's torch.jit.script is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        ref = _reference("CodeFormer")
    desc = load_model(_saved(tmp_path, _randomized(ref)))
    assert desc.arch == "CodeFormer" and desc.module.fidelity_weight == 0.5  # the inference script's default
    desc.module.fidelity_weight = 0.7
    x = torch.rand(1, 3, 512, 512)
    with torch.no_grad():
        expected, logits = ref(x * 2 - 1, weight=0.7)
        out = desc.module(x)
    assert logits.argmax(-1).unique().numel() > 4 and _mid_range(_unit(expected)) > 0.2
    assert (out - _unit(expected)).abs().max() <= TOL


def test_codeformer_fidelity_weight_changes_the_output():
    """``w`` weighs the encoder's features in the decoder: 0 ignores them, and an argument equals the attribute."""
    kwargs = {"nf": 32, "ch_mult": (1, 2), "dim_embd": 32, "n_head": 2, "n_layers": 1, "codebook_size": 32,
              "connect_list": ("16", "32")}
    torch.manual_seed(0)
    net = create_model("CodeFormer", **kwargs, fidelity_weight=0.9).module.eval()
    with torch.no_grad():
        for p in net.parameters():  # the fusion's last convolutions would give zero scale and shift
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        strong = net(x)
        net.fidelity_weight = 0.0
        none = net(x)
        net.fidelity_weight = 0.9
        again = net(x)
    assert torch.equal(strong, again)
    assert (strong - none).abs().mean() > 0.01


@pytest.mark.parametrize("arch", list(OFFICIAL_PARAMS))
def test_released_configuration_loads_detected_with_official_parameter_count(tmp_path, fused_ops, arch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = _reference(arch)
    assert sum(p.numel() for p in ref.parameters()) == OFFICIAL_PARAMS[arch]
    state = ref.state_dict()
    desc = load_model(_saved(tmp_path, state))
    assert desc.arch == arch and desc.kwargs == create_model(arch).kwargs  # the defaults are the released model
    precisions = ("fp32", "bf16") if arch.startswith("GFPGAN") else ("fp32",)  # codebook choices change in bf16
    assert desc.facts == ModelFacts("face", 1, 3, 3, size_multiple=512, min_size=512, precisions=precisions)
    assert sum(p.numel() for p in desc.module.parameters()) == OFFICIAL_PARAMS[arch]
    ours = desc.module.state_dict()
    assert ours.keys() == state.keys() and all(torch.equal(ours[k], state[k]) for k in state)


def test_face_detectors_claim_only_their_own_layout():
    """GFPGANv1 and GFPGANv1Clean share most key names; the U-Net's first layer and the decoder's biases
    tell them apart."""
    from superres.zoo.detect import detect

    for arch in ("GFPGANv1", "GFPGANv1Clean"):
        state = create_model(arch, **SMALL_GFPGAN).module.state_dict()
        assert detect(state)[0] == arch
