"""Every architecture in spandrel's registry loads through superres and runs on its engine.

For each entry of spandrel's ``MAIN_REGISTRY`` a small random-weight network of its class is saved as
``.pth`` and ``.safetensors``; ``superres.load_model`` must recognise both unhinted (superres's own code
where it implements the network, spandrel's otherwise), with spandrel's facts, and ``superres.upscale``
(the runner: padding, precision, crops) must equal spandrel's own ``ModelDescriptor.__call__`` on a real
photo crop of odd size; tiles with the context superres measures must stay within 1/255 of the whole image.

Tolerance of the equality (fp32, outputs in [0, 1]): the runner feeds convolutions channels-last on the CPU
(oneDNN) where spandrel's call feeds NCHW, and superres's SwinIR, HAT, DAT, SPAN and Real-CUGAN are other
code than spandrel's for the same function (SPAN fuses its re-parameterised kernels before convolving), so
the sums run in other orders. One fp32 rounding is 2^-24 ~ 6e-8 relative; these networks chain at most ~40
layers whose dot products have at most ~600 terms, and reordered sums differ by O(sqrt(terms)) roundings per
layer in the typical case: 40 x sqrt(600) x 6e-8 ~ 6e-5 is the pessimistic bound, and 1e-5 (about 80 units in
the last place at 1.0) the target the issue sets; measured here: at most 7.3e-6 (SPAN), 2e-6 or less
elsewhere.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import warnings

import numpy as np
import pytest
import spandrel
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import superres
from superres.infer.context import measure_margin
from superres.infer.image import declared_context, network_probe
from superres.infer.statistics import TileStatistics
from superres.runner import Runner
from superres.runtime import RunOptions
from superres.zoo import CheckpointError, load_model, save_model
from superres.zoo import spandrel as bridge

REGISTRY = spandrel.MAIN_REGISTRY
TOLERANCE = 1e-5
FP32 = RunOptions(device="cpu", precision="fp32", backend="torch", tile=0, tile_pad=0)


def _net(arch: str, cls: str | None = None, **kwargs) -> torch.nn.Module:
    return getattr(importlib.import_module(f"spandrel.architectures.{arch}"), cls or arch)(**kwargs)


# spandrel id -> a small network of its class (the arguments its loader reads back; widths and depths cut to
# the least the loader still detects) and whose code runs it in superres.
TINY = {
    "ATD": (lambda: _net("ATD", embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, num_tokens=8,
                         upscale=2, upsampler="pixelshuffledirect"), "spandrel"),
    "AuraSR": (lambda: _net("AuraSR", dim=8, image_size=None, input_image_size=None, self_attn_dim_head=4,
                            style_network={"dim_in": 8, "dim_out": 32, "depth": 1}, attn_depths=(1,) * 5,
                            mid_attn_depth=1, up_dim_mults=(1, 2, 2, 2, 2), down_dim_mults=(2, 2, 2)), "spandrel"),
    "CRAFT": (lambda: _net("CRAFT", embed_dim=12, depths=[1], num_heads=[2], upscale=2), "spandrel"),
    "Compact": (lambda: _net("Compact", num_feat=8, num_conv=2, upscale=2), "superres"),
    "DAT": (lambda: _net("DAT", embed_dim=16, depth=[2], num_heads=[2], upscale=2), "superres"),
    "DCTLSA": (lambda: _net("DCTLSA", nf=10, num_modules=6, upscale=2, num_head=5), "spandrel"),
    "DITN": (lambda: _net("DITN", dim=8, ITL_blocks=1, SAL_blocks=1, UFONE_blocks=1, upscale=2), "spandrel"),
    "DRCT": (lambda: _net("DRCT", embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, gc=4, upscale=2,
                          upsampler="pixelshuffle"), "spandrel"),
    "DRUNet": (lambda: _net("DRUNet", in_nc=4, out_nc=3, nc=[8, 8, 8, 8], nb=2), "spandrel"),
    "DnCNN": (lambda: _net("DnCNN", in_nc=3, out_nc=3, nc=8, nb=4), "spandrel"),
    "ESRGAN": (lambda: _net("ESRGAN", num_filters=8, num_blocks=1, scale=4), "superres"),
    # its quality-factor head is a fixed 512-wide MLP: the last width must be 512
    "FBCNN": (lambda: _net("FBCNN", nc=[8, 8, 8, 512], nb=2), "spandrel"),
    "FDAT": (lambda: _net("FDAT", scale=2, embed_dim=8, num_groups=1, depth_per_group=1, num_heads=2, mid_dim=8),
             "spandrel"),
    "FFTformer": (lambda: _net("FFTformer", dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1), "spandrel"),
    # spandrel's loader builds only the official 512 x 512 network (86M parameters): see _reference
    "GFPGAN": (lambda: _net("GFPGAN", out_size=32, num_style_feat=16, num_mlp=1, narrow=0.125), "superres"),
    "GRL": (lambda: _net("GRL", embed_dim=16, depths=[1], num_heads_window=[1], num_heads_stripe=[1], upscale=2,
                         upsampler="pixelshuffle", window_size=4, stripe_size=[4, 4]), "spandrel"),
    "HAT": (lambda: _net("HAT", embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, squeeze_factor=4,
                         num_feat=8, upscale=2, upsampler="pixelshuffle"), "superres"),
    "HVICIDNet": (lambda: _net("HVICIDNet", channels=[4, 4, 8, 8]), "spandrel"),
    "IPT": (lambda: _net("IPT", patch_size=12, n_feats=8, num_heads=2, num_layers=1, scale=[2]), "spandrel"),
    "KBNet": (lambda: _net("KBNet", "KBNet_s", width=8, middle_blk_num=1, enc_blk_nums=[1] * 4,
                           dec_blk_nums=[1] * 4), "spandrel"),
    "LaMa": (lambda: _net("LaMa", in_nc=4), "spandrel"),  # RGB and the mask
    "MMRealSR": (lambda: _net("MMRealSR", num_in_ch=3, num_out_ch=3, num_block=1, num_feat=8, num_grow_ch=4,
                              num_feats=[8, 8, 8, 8]), "spandrel"),
    "MixDehazeNet": (lambda: _net("MixDehazeNet", embed_dims=[8] * 5, depths=[1] * 5), "spandrel"),
    "MoESR": (lambda: _net("MoESR", scale=2, dim=8, n_blocks=1, n_block=1, upsample_dim=8), "spandrel"),
    "MoSR": (lambda: _net("MoSR", upscale=2, n_block=1, dim=8), "spandrel"),
    "NAFNet": (lambda: _net("NAFNet", width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]), "spandrel"),
    "OmniSR": (lambda: _net("OmniSR", num_feat=16, up_scale=2), "spandrel"),
    "PLKSR": (lambda: _net("PLKSR", "RealPLKSR", dim=8, n_blocks=1, upscaling_factor=2, kernel_size=5),
              "spandrel"),
    "RCAN": (lambda: _net("RCAN", scale=2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4), "spandrel"),
    "RGT": (lambda: _net("RGT", embed_dim=12, depth=[2], num_heads=[2], upscale=2), "spandrel"),
    "RealCUGAN": (lambda: _net("RealCUGAN", "UpCunet2x"), "superres"),
    # superres's RestoreFormer builds the official layout (attention at the lowest level); this smaller one
    # has none there, so superres's build fails and spandrel's code runs it
    "RestoreFormer": (lambda: _net("RestoreFormer", n_embed=16, embed_dim=8, ch=32, ch_mult=(1, 1),
                                   num_res_blocks=1, z_channels=8), "spandrel"),
    "RetinexFormer": (lambda: _net("RetinexFormer", n_feat=8, stage=1, num_blocks=[1, 1, 1]), "spandrel"),
    "SAFMN": (lambda: _net("SAFMN", dim=8, n_blocks=1, upscaling_factor=2), "spandrel"),
    "SAFMNBCIE": (lambda: _net("SAFMNBCIE", dim=8, n_blocks=1, num_layers=1, upscaling_factor=2), "spandrel"),
    # 32 channels per attention head: 64 is the least width that has one in each half
    "SCUNet": (lambda: _net("SCUNet", dim=64, config=[2] * 7), "spandrel"),
    "SPAN": (lambda: _net("SPAN", num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2), "superres"),
    "SeemoRe": (lambda: _net("SeemoRe", scale=2, num_experts=2, num_layers=1, embedding_dim=8), "spandrel"),
    "SwiftSRGAN": (lambda: _net("SwiftSRGAN", num_channels=8, num_blocks=1, upscale_factor=2), "spandrel"),
    "Swin2SR": (lambda: _net("Swin2SR", embed_dim=12, depths=[2], num_heads=[2], window_size=4, upscale=2,
                             upsampler="pixelshuffledirect"), "spandrel"),
    "SwinIR": (lambda: _net("SwinIR", embed_dim=12, depths=[2], num_heads=[2], window_size=4, upscale=2,
                            upsampler="pixelshuffledirect"), "superres"),
    "Uformer": (lambda: _net("Uformer", embed_dim=4, depths=[1] * 9), "spandrel"),
}
IDS = [support.architecture.id for support in REGISTRY]


def test_every_architecture_in_spandrels_registry_is_covered_and_counted(capsys):
    from superres.archs import REGISTRY as OURS

    assert sorted(TINY) == sorted(IDS), "a spandrel architecture without a small test network (or a stale one)"
    assert set(bridge.LICENCES) >= set(IDS) and set(bridge.KINDS) >= set(IDS)
    assert all(name in OURS for names in bridge.OURS_TOO.values() for name in names)
    ours = [name for name, spec in OURS.items() if _default_facts(spec).purpose in ("sr", "face")]
    also_ours = [arch for arch in IDS if arch in bridge.OURS_TOO]
    total = len(ours) + len(IDS) - len(also_ours)
    with capsys.disabled():
        print(f"\nloadable image architectures: {len(ours)} with superres's code before, {total} now "
              f"(+ {len(IDS) - len(also_ours)} through spandrel; its registry has {len(IDS)}, "
              f"{len(also_ours)} of them also superres's)")


def _default_facts(spec):
    from superres.zoo import _full_kwargs

    return spec.facts(_full_kwargs(spec.cls, {}))


def _odd_size(n: int, minimum: int, multiple: int) -> int:
    """The first odd side from ``n`` that spandrel and the runner pad alike (reflection only: less padding
    than the side itself; beyond that spandrel reflects, then replicates, where the runner replicates)."""
    while True:
        padded = max(n, minimum)
        padded += -padded % multiple
        if padded - n < n:
            return n
        n += 2


def _reference(arch: str, net: torch.nn.Module, state: dict):
    """spandrel's descriptor of ``state`` (its registry's loader) and the function to compare with:
    ``ModelDescriptor.__call__``, except for GFPGAN. Its loader builds only the official 512 x 512 network
    (86M parameters), and its call feeds [0, 1] to a network that takes [-1, 1] and draws fresh noise (chaiNNer
    normalises around it): the reference is that network run as GFPGAN's own inference runs it."""
    if arch != "GFPGAN":
        ref = REGISTRY[arch].architecture.load(dict(state)).eval()
        return ref, ref
    from spandrel import ImageModelDescriptor, SizeRequirements

    ref = ImageModelDescriptor(net, state, architecture=REGISTRY[arch].architecture, purpose="FaceSR", tags=[],
                               supports_half=False, supports_bfloat16=True, scale=1, input_channels=3,
                               output_channels=3, size_requirements=SizeRequirements(minimum=32)).eval()

    def official(x: torch.Tensor) -> torch.Tensor:
        pad = 32 - x.shape[-2], 32 - x.shape[-1]
        y = net(F.pad(x, (0, pad[1], 0, pad[0]), mode="reflect") * 2 - 1, randomize_noise=False)[0]
        return ((y + 1) / 2).clamp(0, 1)[..., :x.shape[-2], :x.shape[-1]]

    return ref, official


def _call(function, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    torch.manual_seed(0)  # AuraSR draws its style and noise in each pass; superres seeds each pass with 0
    with torch.inference_mode():
        return function(x)[0].permute(1, 2, 0).numpy()


def _write_malicious_pickle(path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this file ran code",))  # (not print: Ray's tests replace builtins.print)

    path.write_bytes(pickle.dumps({"conv_first.weight": Payload()}, protocol=2))


def _save_safetensors(state: dict, path) -> None:
    """safetensors refuses tensors that share memory (tied weights): those are stored as copies."""
    seen, tensors = set(), {}
    for key, value in state.items():
        where = value.untyped_storage().data_ptr()
        tensors[key] = value.clone() if where in seen else value.contiguous()
        seen.add(where)
    save_file(tensors, path)


_BUILT: dict[str, tuple] = {}


def _built(arch: str, folder) -> tuple:
    """(state dict, spandrel's descriptor, the reference function, .pth path, .safetensors path), once per
    architecture: the tiling test reuses the files."""
    if arch not in _BUILT:
        make, _ = TINY[arch]
        torch.manual_seed(0)
        net = make().eval()
        state = net.state_dict()
        ref, function = _reference(arch, net, state)
        paths = folder / f"{arch}.pth", folder / f"{arch}.safetensors"
        torch.save(state, paths[0])
        _save_safetensors(state, paths[1])
        _BUILT[arch] = (state, ref, function, *paths)
    return _BUILT[arch]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("spandrel")


@pytest.mark.parametrize("arch", IDS)
def test_loads_and_runs_like_spandrel(arch, folder, photos):
    _, ref, function, pth, safetensors = _built(arch, folder)
    code, req = TINY[arch][1], ref.size_requirements
    loaded = [load_model(path) for path in (pth, safetensors)]
    for desc in loaded:
        assert desc.code == code and desc.source is not None
        assert (desc.purpose, desc.scale, desc.in_channels, desc.out_channels) == \
            (bridge.PURPOSES[ref.purpose], ref.scale, ref.input_channels, ref.output_channels)
        if code == "spandrel":  # superres's own code has its own size requirements and precisions
            assert (desc.arch, desc.licence, desc.size_multiple, desc.min_size) == \
                (arch, bridge.LICENCES[arch], req.multiple_of, max(1, req.minimum))
            assert set(desc.precisions) == {"fp32", *["bf16"] * ref.supports_bfloat16, *["fp16"] * ref.supports_half}
    desc = loaded[1]

    bad = folder / f"4x-{arch}-bad.pth"
    _write_malicious_pickle(bad)
    with pytest.raises(CheckpointError, match=r"refused: its pickle imports \w+\.system"):
        load_model(bad)

    image = _odd_crop(photos["astronaut"], ref, desc)
    if desc.purpose == "inpainting":  # a mask is needed: refused in one line, not run
        with pytest.raises(ValueError, match="inpainting network, which needs a mask"):
            superres.upscale(image, str(safetensors), options=FP32)
        return
    if desc.purpose == "face":  # aligned face crops: the face restorer runs them, through the runner
        ours = Runner(desc, FP32)(image)
    else:
        ours = superres.upscale(image, str(safetensors), options=FP32)
    theirs = _call(function, image)
    h, w = image.shape[:2]
    assert ours.shape == theirs.shape == (h * desc.scale, w * desc.scale, desc.out_channels)
    assert np.abs(ours - theirs).max() <= TOLERANCE


def _odd_crop(photo: np.ndarray, ref, desc) -> np.ndarray:
    """A crop of odd size (from 19 x 23) that both spandrel's and superres's size requirements pad alike."""
    req = ref.size_requirements
    minimum = max(req.minimum, desc.min_size)
    multiple = math.lcm(req.multiple_of, desc.size_multiple)
    start = 19 if req.minimum == desc.min_size else minimum + 1  # padded to another minimum: not alike
    h, w = (_odd_size(n, minimum, multiple) for n in (start, start + 4))
    return photo[100:100 + h, 180:180 + w, :ref.input_channels].copy()


# How tiles with the measured context compare with the whole image, per architecture (random weights; the
# context measured in windows of the bundled photos, of 32 pixels where that settles, else 128 (superres's own
# first window), 256 or 512). Tiles start on the network's grid (its size multiple, attention windows and
# downsampling strides: superres.infer.image.tile_alignment) and share the whole image's statistics (global
# pooling, transposed attention), geometry (aligned resampling), wrap (unmasked shifted windows) and whole-map
# parts (superres.zoo.whole_maps: AuraSR's noise and attention, OmniSR's grid windows, RGT's pooled keys) where
# the network has them (superres.infer.statistics):
# - LOCAL (32-pixel windows) and WIDE (128 or 256): the context settles and tiles are within 1/255 of the whole
#   image. SHARED marks those whose tiles need the whole image's statistics to get there.
# - INHERENT: the network's output at a pixel depends on the whole image in a way tiles do not share (none now);
#   superres warns that their tiles differ and runs images whole where they fit.
# - FAR: the context does not settle within 128 pixels (none now; IPT did before it declared its patches).
#   superres gives tiles the widest context it measured and says so (a warning).
LOCAL = {"ATD", "CRAFT", "Compact", "DAT", "DRCT", "DnCNN", "ESRGAN", "FDAT", "HAT", "IPT", "MMRealSR",
         "MixDehazeNet", "MoESR", "MoSR", "NAFNet", "OmniSR", "PLKSR", "RCAN", "RealCUGAN", "SPAN", "SeemoRe",
         "SwiftSRGAN", "SwinIR"}
WIDE = {"AuraSR": 128, "DCTLSA": 128, "DITN": 128, "DRUNet": 128, "FBCNN": 128, "FFTformer": 256, "GRL": 512,
        "HVICIDNet": 256, "KBNet": 128, "RGT": 128, "RetinexFormer": 128, "SAFMN": 128, "SAFMNBCIE": 128,
        "SCUNet": 256, "Swin2SR": 128, "Uformer": 128}
# Measured by hand, too slow for the suite: GRL (43 s here), on its 128-pixel grid, tiles within 0.011/255;
# HVI-CIDNet (70 s: its smallest tiles need 9 passes to share its 36 reductions), within 0.49/255 on the 49
# pixels measured (its whole-image resampling positions: tests/test_statistics.py's AlignedResampling);
# DCTLSA (34 s on an AMD EPYC, 15 s on an Intel Xeon: its 24 rolls take 24 passes over the tiles at the
# borders), within 0.07/255 on the 24 pixels measured, spread over the image as float rounding is (its shifted
# windows wrap around the image without a mask: tests/test_statistics.py's ShiftedWindows; 9.7/255 at the
# borders before the rolls were shared).
BY_HAND = {"DCTLSA", "GRL", "HVICIDNet"}
SHARED = {"AuraSR", "CRAFT", "DAT", "DCTLSA", "FBCNN", "FDAT", "HAT", "HVICIDNet", "KBNet", "MMRealSR",
          "MixDehazeNet", "NAFNet", "OmniSR", "RCAN", "RGT", "RealCUGAN", "RetinexFormer", "SeemoRe"}
INHERENT: dict[str, tuple[str, int]] = {}  # (AuraSR, OmniSR and RGT were, before their parts were declared)
FAR: set[str] = set()
FAR_SAMPLE: tuple[str, ...] = ()  # (tests/test_newcomer_images checks the warning itself)
TILED = [*((arch, 32) for arch in sorted(LOCAL)),
         *((arch, window) for arch, window in sorted(WIDE.items()) if arch not in BY_HAND),
         *((arch, 128) for arch in FAR_SAMPLE),
         *(pytest.param(arch, window, marks=pytest.mark.xfail(strict=True, reason=f"tiles cannot share {why}"))
           for arch, (why, window) in sorted(INHERENT.items()))]


def test_every_image_to_image_architecture_is_classed_for_tiles():
    runs = {arch for arch in IDS if bridge.KINDS[arch].startswith(("sr", "restoration"))}
    classes = (LOCAL, set(WIDE), set(INHERENT), FAR)
    assert set().union(*classes) == runs and sum(map(len, classes)) == len(runs)
    assert SHARED <= LOCAL | set(WIDE)


@pytest.mark.parametrize("arch, window", TILED)
def test_tiles_with_the_measured_context_match_the_whole_image(arch, window, folder, photos):
    """Tiles with the context superres measures give the whole image's output within 1/255, or superres
    says that this network looks further than it can measure. Measured as ``superres upscale`` measures, on
    the bundled photos, in one window size (32 or 128 pixels; superres tries 128 to 512) to stay quick."""
    path = str(_built(arch, folder)[4])
    desc = load_model(path)
    runner = Runner(desc, FP32)
    found = network_probe(desc)
    assert bool(found.reductions) == (arch in SHARED) or arch not in LOCAL | set(WIDE)
    statistics = TileStatistics(found, runner.padded) if found.shares else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        margin = measure_margin(lambda x: runner.forward(x, "fp32"), desc.scale, desc.in_channels, start=window,
                                limit=window, name=desc.arch, align=found.grid, statistics=statistics)
    margin = max(margin, declared_context(desc))  # (IPT's patches, as the upscaler takes them)
    far = any("looks further" in str(w.message) for w in caught)
    assert far == (arch in FAR)
    if far:
        return
    ramp = max(4, margin // 8)
    tile = max(2 * margin + ramp + 8, desc.min_size) + found.grid - 1  # the smallest the upscaler takes: most seams
    side = tile + tile // 2 + 1
    image = photos["chelsea"][40:40 + side, 60:60 + side + 2].copy()
    whole = superres.upscale(image, path, options=FP32)
    tiles = superres.upscale(image, path, device="cpu", precision="fp32", backend="torch", tile=tile,
                             tile_pad=margin)
    assert np.abs(tiles - whole).max() <= 1 / 255


def _tiny_state(arch: str) -> dict:
    torch.manual_seed(0)
    return TINY[arch][0]().state_dict()


def test_spandrel_models_save_reload_and_interpolate(tmp_path):
    from superres.zoo import interpolate

    a = load_model(_tiny_state("PLKSR"))
    assert a.origin == "PLKSR (RealPLKSR), spandrel's code (MIT)" and a.kwargs["dim"] == 8
    save_model(a, tmp_path / "a.safetensors")  # the network's own layout: spandrel reads it again
    again = load_model(tmp_path / "a.safetensors")
    assert (again.arch, again.code, again.kwargs, again.facts) == (a.arch, a.code, a.kwargs, a.facts)
    for key, value in a.module.state_dict().items():
        assert torch.equal(again.module.state_dict()[key], value)
    b = load_model({k: v + 0.01 if v.is_floating_point() else v for k, v in a.module.model.state_dict().items()})
    mixed = interpolate(a, b, 0.5)
    assert mixed.code == "spandrel"
    ours, theirs = mixed.module.model.state_dict(), a.module.model.state_dict()
    assert all(torch.allclose(ours[k], theirs[k] + 0.005, atol=1e-6) for k in theirs if theirs[k].is_floating_point())


def test_superres_code_runs_what_it_builds_and_spandrel_the_variants_it_does_not():
    esrgan = {kwargs["scale"]: load_model(_net("ESRGAN", num_filters=8, num_blocks=1, **kwargs).state_dict())
              for kwargs in ({"scale": 4}, {"scale": 2})}
    assert (esrgan[4].arch, esrgan[4].code) == ("RRDBNet", "superres")
    assert (esrgan[2].arch, esrgan[2].code, esrgan[2].scale) == ("ESRGAN", "spandrel", 2)  # old layout, x2
    plus = load_model(_net("ESRGAN", num_filters=8, num_blocks=1, scale=4, plus=True).state_dict())
    assert (plus.arch, plus.code, plus.kwargs["plus"]) == ("ESRGAN", "spandrel", True)  # ours claims, cannot build


def test_real_cugans_fast_2x_network_loads_through_spandrel():
    """Its first U-Net takes the pixel-unshuffled input (12 channels) and its last layer has UpCunet4x's shape:
    superres's UpCunet4x detector leaves it to spandrel."""
    desc = load_model(_net("RealCUGAN", "UpCunet2x_fast").state_dict())
    assert (desc.scale, desc.in_channels, desc.code) == (2, 3, "spandrel")


def test_a_hostile_layout_cannot_make_spandrel_build_a_huge_network():
    state = _net("DnCNN", in_nc=3, out_nc=3, nc=8, nb=4).state_dict()
    state["model.60000.weight"] = torch.zeros(3, 8, 3, 3)  # 20,000 blocks, by key indices alone
    with pytest.raises(CheckpointError, match="far more parts than the file's"):
        load_model(state)


def _restormer(tmp_path):
    from spandrel_extra_arches.architectures.Restormer import Restormer

    torch.manual_seed(0)
    net = Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1])
    save_file(net.state_dict(), tmp_path / "restormer.safetensors")
    return net, tmp_path / "restormer.safetensors"


def test_extra_architectures_need_the_opt_in(tmp_path, monkeypatch, photos):
    from spandrel_extra_arches import EXTRA_REGISTRY

    net, path = _restormer(tmp_path)
    monkeypatch.delenv(bridge.EXTRA_ENV, raising=False)
    with pytest.raises(CheckpointError, match=r"Restormer network: spandrel_extra_arches has its code, under "
                       r"Academic Public License \(non-commercial\); set SUPERRES_EXTRA_ARCHES=1"):
        load_model(path)
    monkeypatch.setenv(bridge.EXTRA_ENV, "1")
    desc = load_model(path)
    assert desc.origin == "Restormer, spandrel_extra_arches's code (Academic Public License (non-commercial))"
    image = photos["astronaut"][:21, :25].copy()
    theirs = _call(EXTRA_REGISTRY.load(net.state_dict()).eval(), image)
    assert np.abs(superres.upscale(image, str(path), options=FP32) - theirs).max() <= TOLERANCE


def test_without_the_extra_package_its_architectures_are_unknown(tmp_path, monkeypatch):
    import sys

    _, path = _restormer(tmp_path)
    monkeypatch.setenv(bridge.EXTRA_ENV, "1")
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)  # as if not installed
    with pytest.raises(CheckpointError, match=r'matches no known architecture.*pip install "superres\[extra-arches\]"'):
        load_model(path)
    assert sorted(arch for arch, *_ in bridge.architectures()) == sorted(IDS)


def test_extras_installed_into_spandrels_own_registry_still_need_the_opt_in(monkeypatch):
    from spandrel import ArchRegistry
    from spandrel_extra_arches import EXTRA_REGISTRY

    everything = ArchRegistry()
    everything.add(*REGISTRY, *EXTRA_REGISTRY)  # what spandrel_extra_arches.install() does to MAIN_REGISTRY
    monkeypatch.setattr(spandrel, "MAIN_REGISTRY", everything)
    bridge.main_registry.cache_clear()
    try:
        assert sorted(s.architecture.id for s in bridge.main_registry()) == sorted(IDS)
    finally:
        bridge.main_registry.cache_clear()


def test_models_command_lists_every_architecture_and_describes_a_file(tmp_path, capsys, monkeypatch):
    from superres.cli import main

    monkeypatch.delenv(bridge.EXTRA_ENV, raising=False)
    assert main(["models", "--archs"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    for arch in IDS:
        assert f"spandrel {spandrel.__version__}" in rows[arch] and bridge.LICENCES[arch] in rows[arch]
    assert "superres" in rows["RRDBNet"] and "Apache-2.0" in rows["RRDBNet"]
    assert "superres's RRDBNet first" in rows["ESRGAN"] and "inpainting" in rows["LaMa"]
    assert "needs SUPERRES_EXTRA_ARCHES=1" in rows["Restormer"]

    path = tmp_path / "nafnet.safetensors"
    save_file(_tiny_state("NAFNet"), path)
    assert main(["models", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: NAFNet, spandrel's code (MIT)\n") and "restoration, x1, 3 -> 3 channels" in out


def test_upscale_runs_a_restorer_at_scale_1_and_refuses_inpainting(tmp_path, capsys, photos):
    from superres.cli import main
    from superres.io import read_image, write_image

    src = tmp_path / "in.png"
    write_image(src, photos["chelsea"][:37, :41])
    restorer = tmp_path / "dncnn.safetensors"
    save_file(_tiny_state("DnCNN"), restorer)
    assert main(["upscale", str(src), "-o", str(tmp_path / "out.png"), "-m", str(restorer), "--device", "cpu"]) == 0
    assert f"{restorer}: DnCNN, spandrel's code (MIT), x1 on cpu" in capsys.readouterr().err
    assert read_image(tmp_path / "out.png")[0].shape == (37, 41, 3)

    lama = _built("LaMa", tmp_path)[4]
    assert main(["upscale", str(src), "-o", str(tmp_path / "lama.png"), "-m", str(lama), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert "LaMa is an inpainting network, which needs a mask" in err and len(err.splitlines()) == 1
