import json
import pickle

import pytest
import torch
from safetensors import safe_open

import superres
from superres.cli import main
from superres.zoo import CheckpointError


def small_rrdb(seed: int = 0):
    torch.manual_seed(seed)
    return superres.create_model("RRDBNet", num_block=2, num_feat=16, num_grow_ch=8).module


def same_function(a, b, shape=(1, 3, 11, 13)) -> bool:
    x = torch.rand(shape)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_training_checkpoint_wrappers(tmp_path):
    ema, raw = small_rrdb(0), small_rrdb(1)
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, tmp_path / "basicsr.pth")
    assert same_function(superres.load_model(tmp_path / "basicsr.pth").module, ema)  # EMA preferred

    mmagic = {f"generator.{k}": v for k, v in raw.state_dict().items()}
    mmagic |= {f"generator_ema.{k}": v for k, v in ema.state_dict().items()}
    mmagic |= {"discriminator.conv.weight": torch.zeros(1)}
    torch.save({"meta": {"epoch": 3}, "state_dict": mmagic}, tmp_path / "mmagic.pth")
    assert same_function(superres.load_model(tmp_path / "mmagic.pth").module, ema)

    torch.save({f"module.{k}": v for k, v in raw.state_dict().items()}, tmp_path / "ddp.pt")
    assert same_function(superres.load_model(tmp_path / "ddp.pt").module, raw)


def _original_esrgan_state(net) -> dict:
    """Our RRDBNet's weights under xinntao/ESRGAN's original keys: model.0, model.1.sub.N.RDBk.convj.0,
    model.1.sub.<num_block> (the trunk conv), model.3/6/8/10."""
    num_block = len(net.body)
    rename = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}", "conv_up1": "model.3",
              "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
    old = {}
    for k, v in net.state_dict().items():
        parts = k.split(".")
        if parts[0] == "body":
            old[f"model.1.sub.{parts[1]}.RDB{parts[2][-1]}.{parts[3]}.0.{parts[4]}"] = v
        else:
            old[f"{rename[parts[0]]}.{parts[1]}"] = v
    return old


def test_original_esrgan_layout():
    net = small_rrdb()
    loaded = superres.load_model(_original_esrgan_state(net))
    assert loaded.arch == "RRDBNet" and loaded.kwargs["num_block"] == 2 and loaded.scale == 4
    assert same_function(loaded.module, net)


def test_current_official_esrgan_layout():
    """xinntao/ESRGAN's RRDBNet_arch.py layout (RRDB_ESRGAN_x4.pth as published now), made from the
    original layout by the rules of the repository's own transer_RRDB_models.py."""
    net = small_rrdb()
    num_block = len(net.body)
    original = _original_esrgan_state(net)
    fixed = {"model.0": "conv_first", f"model.1.sub.{num_block}": "trunk_conv", "model.3": "upconv1",
             "model.6": "upconv2", "model.8": "HRconv", "model.10": "conv_last"}
    current = {}
    for k, v in original.items():
        module, _, param = k.rpartition(".")
        if module in fixed:
            current[f"{fixed[module]}.{param}"] = v
        else:  # model.1.sub.N.RDBk.convj.0.weight -> RRDB_trunk.N.RDBk.convj.weight
            current[k.replace("model.1.sub.", "RRDB_trunk.").replace(f".0.{param}", f".{param}")] = v
    # the module names of RRDBNet_arch.py: conv_first, RRDB_trunk (RRDB: RDB1-3, each conv1-5), trunk_conv,
    # upconv1, upconv2, HRconv, conv_last, all with bias
    official = ["conv_first"] + [f"RRDB_trunk.{i}.RDB{k}.conv{j}" for i in range(num_block) for k in (1, 2, 3)
                                 for j in range(1, 6)] + ["trunk_conv", "upconv1", "upconv2", "HRconv", "conv_last"]
    assert set(current) == {f"{m}.{p}" for m in official for p in ("weight", "bias")}
    loaded = superres.load_model(current)
    assert loaded.arch == "RRDBNet" and loaded.kwargs["num_block"] == 2 and loaded.scale == 4
    assert same_function(loaded.module, net)


def test_safetensors_round_trip_is_bit_exact_and_self_describing(tmp_path):
    net = superres.create_model("SRCNN", channels=(1, 64, 32, 1), kernel_sizes=(9, 5, 5), upscale_factor=3).module
    superres.save_model(net, tmp_path / "srcnn.safetensors", provenance="test")
    with safe_open(str(tmp_path / "srcnn.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["superres_arch"] == "SRCNN" and json.loads(meta["scale"]) == 3
    loaded = superres.load_model(tmp_path / "srcnn.safetensors")  # the scale comes from the metadata
    assert loaded.scale == 3 and loaded.in_channels == 1
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[k], v)
    # a descriptor saves too, and a model made outside create_model is detected
    superres.save_model(loaded, tmp_path / "again.safetensors")
    from superres.archs import EDSR

    superres.save_model(EDSR(num_block=1), tmp_path / "edsr.safetensors")
    assert superres.load_model(tmp_path / "edsr.safetensors").arch == "EDSR"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"params": {"conv.weight": torch.zeros(1)}, "x": _Exploit(str(marker))}, f)
    with pytest.raises(CheckpointError, match="refused"):
        superres.load_model(tmp_path / "evil.pth")
    assert not marker.exists()


def test_unknown_and_broken_checkpoints_name_the_problem(tmp_path):
    state = small_rrdb().state_dict()
    del state["conv_up2.weight"], state["conv_up2.bias"]
    state["extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"closest is RRDBNet .*missing conv_up2.bias, conv_up2.weight.*"
                                              r"unexpected extra.weight"):
        superres.load_model(state)
    with pytest.raises(CheckpointError, match="no such model name or file"):
        superres.load_model(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        superres.load_model(tmp_path / "junk.pth")


def test_interpolation(tmp_path):
    a, b = superres.load_model(small_rrdb(0).state_dict()), superres.load_model(small_rrdb(1).state_dict())
    for alpha in (0.0, 1.0):
        mixed = superres.interpolate(a, b, alpha)
        assert same_function(mixed.module, (a if alpha == 0 else b).module)
    half = superres.interpolate(a, b, 0.5).module.state_dict()
    key = "conv_first.weight"
    torch.testing.assert_close(half[key], (a.module.state_dict()[key] + b.module.state_dict()[key]) / 2)
    other = superres.create_model("RRDBNet", num_block=3, num_feat=16, num_grow_ch=8)
    with pytest.raises(CheckpointError, match="architectures differ"):
        superres.interpolate(a, other, 0.5)

    superres.save_model(a, tmp_path / "a.safetensors")
    superres.save_model(b, tmp_path / "b.safetensors")
    out = tmp_path / "c.safetensors"
    assert main(["interpolate", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "--alpha", "0.8", "-o", str(out)]) == 0
    c = superres.load_model(out).module.state_dict()
    torch.testing.assert_close(c[key], 0.2 * a.module.state_dict()[key] + 0.8 * b.module.state_dict()[key])


# MMagic cannot be installed here (it needs mmcv); these transcribe the forward passes of its
# MSRResNet and EDSRNet (mmagic/models/editors/srgan/sr_resnet.py, edsr/edsr_net.py) with their
# parameter names, so that a state dict in MMagic's layout can be made and checked.
class _PixelShufflePack(torch.nn.Module):
    def __init__(self, channels, scale):
        super().__init__()
        self.scale = scale
        self.upsample_conv = torch.nn.Conv2d(channels, channels * scale * scale, 3, padding=1)

    def forward(self, x):
        return torch.nn.functional.pixel_shuffle(self.upsample_conv(x), self.scale)


class _MMagicResBlock(torch.nn.Module):
    def __init__(self, c, res_scale=1.0):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = torch.nn.Conv2d(c, c, 3, 1, 1)
        self.conv2 = torch.nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x))) * self.res_scale


class _MMagicMSRResNet(torch.nn.Module):
    def __init__(self, c=32, blocks=2, scale=4):
        super().__init__()
        self.scale = scale
        self.conv_first = torch.nn.Conv2d(3, c, 3, 1, 1)
        self.trunk_net = torch.nn.Sequential(*[_MMagicResBlock(c) for _ in range(blocks)])
        self.upsample1 = _PixelShufflePack(c, 2 if scale == 4 else scale)
        if scale == 4:
            self.upsample2 = _PixelShufflePack(c, 2)
        self.conv_hr = torch.nn.Conv2d(c, c, 3, 1, 1)
        self.conv_last = torch.nn.Conv2d(c, 3, 3, 1, 1)
        self.lrelu = torch.nn.LeakyReLU(0.1)

    def forward(self, x):
        out = self.upsample1(self.trunk_net(self.lrelu(self.conv_first(x))))
        if self.scale == 4:
            out = self.upsample2(out)
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


class _MMagicEDSRNet(torch.nn.Module):
    def __init__(self, c=32, blocks=2, scale=4):
        super().__init__()
        self.mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
        self.conv_first = torch.nn.Conv2d(3, c, 3, padding=1)
        self.body = torch.nn.Sequential(*[_MMagicResBlock(c) for _ in range(blocks)])
        self.conv_after_body = torch.nn.Conv2d(c, c, 3, 1, 1)
        stages = [3] if scale == 3 else [2] * (scale // 2)
        self.upsample = torch.nn.Sequential(*[_PixelShufflePack(c, s) for s in stages])
        self.conv_last = torch.nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, x):
        x = self.conv_first(x - self.mean)  # rgb_std = 1
        res = self.conv_after_body(self.body(x)) + x
        return self.conv_last(self.upsample(res)) + self.mean


@pytest.mark.parametrize("reference, arch", [
    (_MMagicMSRResNet(scale=4), "MSRResNet"), (_MMagicMSRResNet(scale=3), "MSRResNet"),
    (_MMagicEDSRNet(scale=4), "EDSR"), (_MMagicEDSRNet(scale=3), "EDSR"), (_MMagicEDSRNet(scale=2), "EDSR"),
])
def test_mmagic_layouts(tmp_path, reference, arch):
    torch.manual_seed(0)
    for p in reference.parameters():
        p.data.normal_(0, 0.05)
    ckpt = {"meta": {}, "state_dict": {f"generator.{k}": v for k, v in reference.state_dict().items()}}
    torch.save(ckpt, tmp_path / "mmagic.pth")
    loaded = superres.load_model(tmp_path / "mmagic.pth")
    assert loaded.arch == arch
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        expected = reference(x)
        assert (loaded.module(x) - expected).abs().max().item() <= 1e-5


def test_mmagic_srcnn_layout_is_ours():
    """MMagic's SRCNNNet has the same keys (conv1-3) and upsamples with PyTorch bicubic."""
    net = superres.create_model("SRCNN", channels=(3, 64, 32, 3), kernel_sizes=(9, 1, 5), upscale_factor=4).module
    loaded = superres.load_model({"state_dict": {f"generator.{k}": v for k, v in net.state_dict().items()}})
    assert loaded.arch == "SRCNN" and loaded.scale == 4 and same_function(loaded.module, net)


@pytest.mark.parametrize("name, make, expected", [
    ("RealESRGAN_x4plus / RealESRNet_x4plus / ESRGAN", lambda m: m.rrdbnet_arch.RRDBNet(3, 3, scale=4),
     {"arch": "RRDBNet", "scale": 4, "num_block": 23, "num_feat": 64, "num_grow_ch": 32}),
    ("RealESRGAN_x4plus_anime_6B", lambda m: m.rrdbnet_arch.RRDBNet(3, 3, scale=4, num_block=6),
     {"arch": "RRDBNet", "scale": 4, "num_block": 6}),
    ("RealESRGAN_x2plus", lambda m: m.rrdbnet_arch.RRDBNet(3, 3, scale=2),
     {"arch": "RRDBNet", "scale": 2, "num_in_ch": 3, "num_block": 23}),
    ("realesr-animevideov3", lambda m: m.srvgg_arch.SRVGGNetCompact(3, 3, 64, 16, 4, "prelu"),
     {"arch": "SRVGGNetCompact", "num_conv": 16, "upscale": 4, "act_type": "prelu"}),
    ("realesr-general-x4v3", lambda m: m.srvgg_arch.SRVGGNetCompact(3, 3, 64, 32, 4, "prelu"),
     {"arch": "SRVGGNetCompact", "num_conv": 32, "upscale": 4}),
    ("EDSR_Lx4 (BasicSR)", lambda m: m.edsr_arch.EDSR(3, 3, 256, 32, 4, res_scale=0.1),
     {"arch": "EDSR", "num_feat": 256, "num_block": 32, "res_scale": 0.1, "upscale": 4}),
])
def test_released_configurations_are_detected(basicsr, name, make, expected):
    from basicsr import archs

    reference = make(archs)
    loaded = superres.load_model({"params_ema": reference.state_dict(), "params": reference.state_dict()})
    got = {"arch": loaded.arch, **loaded.kwargs}
    assert {k: got[k] for k in expected} == expected, name
