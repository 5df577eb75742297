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
    return superres.create_model("RRDBNet", num_block=2, num_feat=16, num_grow_ch=8)


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


def test_original_esrgan_layout():
    """xinntao/ESRGAN's RRDB_ESRGAN_x4.pth keys: model.0, model.1.sub.N.RDBk.convj.0, model.3/6/8/10."""
    net = small_rrdb()
    rename = {"conv_first": "model.0", "conv_body": "model.1.sub.2", "conv_up1": "model.3", "conv_up2": "model.6",
              "conv_hr": "model.8", "conv_last": "model.10"}
    old = {}
    for k, v in net.state_dict().items():
        parts = k.split(".")
        if parts[0] == "body":
            old[f"model.1.sub.{parts[1]}.RDB{parts[2][-1]}.{parts[3]}.0.{parts[4]}"] = v
        else:
            old[f"{rename[parts[0]]}.{parts[1]}"] = v
    loaded = superres.load_model(old)
    assert loaded.arch == "RRDBNet" and loaded.kwargs["num_block"] == 2 and loaded.scale == 4
    assert same_function(loaded.module, net)


def test_safetensors_round_trip_is_bit_exact_and_self_describing(tmp_path):
    net = superres.create_model("SRCNN", channels=(1, 64, 32, 1), kernel_sizes=(9, 5, 5), upscale_factor=3)
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
    other = superres.load_model(superres.create_model("RRDBNet", num_block=3, num_feat=16, num_grow_ch=8).state_dict())
    with pytest.raises(CheckpointError, match="architectures differ"):
        superres.interpolate(a, other, 0.5)

    superres.save_model(a, tmp_path / "a.safetensors")
    superres.save_model(b, tmp_path / "b.safetensors")
    out = tmp_path / "c.safetensors"
    assert main(["interpolate", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "--alpha", "0.8", "-o", str(out)]) == 0
    c = superres.load_model(out).module.state_dict()
    torch.testing.assert_close(c[key], 0.2 * a.module.state_dict()[key] + 0.8 * b.module.state_dict()[key])
