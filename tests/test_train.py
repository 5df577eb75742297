"""Training: config checking, exact resume, DDP = one process, GAN training, recipes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_main

from superres.cli import main
from superres.data import SampleStream
from superres.errors import SuperresError
from superres.io import write_image
from superres.train import ConfigError, Trainer, load_config
from superres.zoo import load_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, photos) -> Path:
    """Six real 60x72 crops for training and two for validation."""
    root = tmp_path_factory.mktemp("data")
    for split, n in (("train", 6), ("val", 2)):
        (root / split).mkdir()
        for i in range(n):
            img = photos["chelsea" if i % 2 else "astronaut"]
            write_image(root / split / f"{split}{i}.png", img[20 * i:20 * i + 60, 30 * i:30 * i + 72])
    return root


def write_config(folder: Path, data: Path, **changes) -> Path:
    config = {
        "name": "tiny", "scale": 2, "seed": 3, "output": str(folder / "run"),
        "model": {"arch": "FSRCNN", "args": {"upscale": 2, "num_channels": 3, "d": 8, "s": 4, "m": 1}},
        "data": {"hr": str(data / "train"), "patch_size": 24, "batch_size": 4},
        "val": [{"name": "val", "hr": str(data / "val")}],
        "train": {"iterations": 6, "optimizer": {"lr": 1e-3},
                  "scheduler": {"type": "MultiStep", "milestones": [2, 4], "gamma": 0.5},
                  "ema_decay": 0.9, "pixel_loss": {"type": "Charbonnier"}},
        "checkpoint": {"every": 3, "keep_last": 2},
        "log": {"every": 1, "val_every": 3, "tensorboard": False},
    }
    for key, value in changes.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = folder / "tiny.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def steps(trainer: Trainer, iterations: int):
    """(iteration, batch) for the first ``iterations`` training steps, the trainer's own sample stream."""
    batches = torch.utils.data.DataLoader(trainer.dataset, batch_sampler=SampleStream(
        len(trainer.dataset), trainer.cfg.data.batch_size, trainer.cfg.seed))
    return enumerate(itertools.islice(batches, iterations))


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["iter"]: r["l_pix"] for r in records if "l_pix" in r}


# --- configs ----------------------------------------------------------------------------------

def test_config_errors_name_the_key(tmp_path, tiny_data):
    path = write_config(tmp_path, tiny_data)
    with pytest.raises(ConfigError, match=r"train\.optimizer\.betaz: Extra inputs are not permitted"):
        load_config(path, ["train.optimizer.betaz=[0.9, 0.99]"])
    with pytest.raises(ConfigError, match=r"data\.batch_size: Input should be a valid integer"):
        load_config(path, ["data.batch_size=many"])
    with pytest.raises(ConfigError, match=r"val\[0\]\.hr: no such folder"):
        load_config(path, [f"val=[{{name: v, hr: {tmp_path / 'nowhere'}}}]"])
    with pytest.raises(ConfigError, match=r"model: .*unknown arch 'FSRCNNN'"):
        load_config(path, ["model.arch=FSRCNNN"])
    with pytest.raises(ConfigError, match=r"train\.scheduler\.periods: Field required"):
        load_config(path, ["train.scheduler={type: CosineAnnealingRestart}"])


def test_config_inherits_from_a_base_and_takes_overrides(tmp_path, tiny_data):
    base = write_config(tmp_path, tiny_data)
    child = tmp_path / "sub" / "child.yaml"
    child.parent.mkdir()
    child.write_text("base: ../tiny.yaml\nname: child\ntrain: {iterations: 9}\n")
    config = load_config(child, ["train.optimizer.lr=0.01"])
    assert (config.name, config.train.iterations, config.train.optimizer.lr) == ("child", 9, 0.01)
    assert config.train.ema_decay == 0.9 and config.scale == load_config(base).scale


def test_validation_images_inside_the_training_folders_are_left_out_of_training(tmp_path, tiny_data):
    # As "T91 + BSD200, validated on BSD200's first 10": the val slice must not be trained on.
    path = write_config(tmp_path, tiny_data, **{
        "data.hr": [str(tiny_data / "train"), str(tiny_data / "val")],
        "val": [{"name": "v", "hr": str(tiny_data / "val"), "max_images": 1}]})
    with pytest.warns(UserWarning, match="1 validation image"):
        trainer = Trainer(load_config(path), quiet=True)
    assert sorted(hr.name for hr, _, _ in trainer.dataset.items) == [f"train{i}.png" for i in range(6)] + ["val1.png"]
    alone = write_config(tmp_path, tiny_data, **{"data.hr": str(tiny_data / "val"),
                                                 "val": [{"name": "v", "hr": str(tiny_data / "val")}]})
    with pytest.raises(SuperresError, match="every image is a validation image"), pytest.warns(UserWarning):
        Trainer(load_config(alone), quiet=True)


def test_cli_check_and_missing_data_fail_before_training(tmp_path, tiny_data):
    path = write_config(tmp_path, tiny_data, **{"data.hr": str(tmp_path / "missing")})
    result = run_main("train", path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "data.hr[0]: no such folder" in result.stderr
    assert not (tmp_path / "run").exists()


def test_recipes_are_valid():
    recipes = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("_"))
    assert len(recipes) >= 12
    for path in recipes:
        config = load_config(path, check_paths=False)
        assert config.source, f"{path.name} does not cite its source"


def test_schema_command_prints_json_schema():
    result = run_main("schema")
    schema = json.loads(result.stdout)
    assert {"model", "data", "train"} <= set(schema["properties"]) and schema["additionalProperties"] is False


# --- training -----------------------------------------------------------------------------------

def test_resume_continues_bit_exactly(tmp_path, tiny_data):
    full = load_config(write_config(tmp_path / "a", tiny_data))
    Trainer(full, quiet=True).fit()
    straight = losses(tmp_path / "a" / "run")

    first = load_config(write_config(tmp_path / "b", tiny_data, **{"train.iterations": 3}))
    Trainer(first, quiet=True).fit()
    second = load_config(write_config(tmp_path / "b", tiny_data))
    Trainer(second, resume="auto", quiet=True).fit()
    resumed = losses(tmp_path / "b" / "run")

    assert sorted(resumed) == list(range(1, 7))
    assert [resumed[i] for i in range(4, 7)] == [straight[i] for i in range(4, 7)]
    a = load_model(tmp_path / "a" / "run" / "model.safetensors").module.state_dict()
    b = load_model(tmp_path / "b" / "run" / "model.safetensors").module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpts = sorted(p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir())
    assert ckpts == ["iter_000000003.pt", "iter_000000006.pt"]
    # a training checkpoint is a model too (-m run/checkpoints/iter_N.pt): the generator it exports
    c = load_model(tmp_path / "b" / "run" / "checkpoints" / "iter_000000006.pt").module.state_dict()
    assert all(torch.equal(b[k], c[k]) for k in b)


def test_training_lowers_the_loss_and_exports_an_upscaler(tmp_path, tiny_data):
    path = write_config(tmp_path, tiny_data, **{"train.iterations": 60, "log.every": 10, "log.val_every": 60,
                                                "train.scheduler": {"type": "Constant"},
                                                "train.optimizer": {"lr": 3e-3}})
    scores = Trainer(load_config(path), quiet=True).fit()
    log = losses(tmp_path / "run")
    assert log[60] < log[10]
    desc = load_model(tmp_path / "run" / "model.safetensors")
    assert desc.arch == "FSRCNN" and desc.scale == 2
    assert (tmp_path / "run" / "best.safetensors").is_file() and scores["val"]["psnr"] > 15


@pytest.mark.parametrize("scale", [2, 1])
def test_pixel_unshuffle_rrdbnet_validates(tmp_path, tiny_data, scale):
    """RRDBNet x2 / x1 fold their input (pixel-unshuffle): the first convolution takes 12 or 48 channels,
    the network 3. Validation asks the architecture's facts, not the first layer."""
    path = write_config(tmp_path, tiny_data, **{
        "scale": scale, "train.iterations": 2, "checkpoint.every": 2, "log.val_every": 2, "data.patch_size": 16,
        "model": {"arch": "RRDBNet", "args": {"scale": scale, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}}})
    scores = Trainer(load_config(path), quiet=True).fit()
    assert scores["val"]["psnr"] > 5


def test_y_channel_training_and_eval(tmp_path, tiny_data):
    path = write_config(tmp_path, tiny_data, **{
        "model.args": {"upscale": 2, "num_channels": 1, "d": 8, "s": 4, "m": 1}, "data.y_channel": True,
        "train.iterations": 2})
    Trainer(load_config(path), quiet=True).fit()
    model = tmp_path / "run" / "model.safetensors"
    report = tmp_path / "eval.json"
    result = run_main("eval", tiny_data / "val", "-m", model, "--scale", "2", "--json", report)
    assert result.returncode == 0, result.stderr
    rows = json.loads(report.read_text())
    assert [r["name"] for r in rows] == ["val0", "val1", "mean"]
    up = run_main("upscale", tiny_data / "val" / "val0.png", "-o", tmp_path / "up.png", "-m", model, "-q")
    assert up.returncode == 0, up.stderr
    from superres.io import read_image

    assert read_image(tmp_path / "up.png")[0].shape == (120, 144, 3)
    bad = run_main("eval", tiny_data / "val", "-m", model, "--scale", "3")
    assert bad.returncode == 1 and "is a x2 model" in bad.stderr


def test_esrgan_gan_training_runs(tmp_path, tiny_data):
    path = write_config(tmp_path, tiny_data, **{
        "scale": 4,
        "model": {"arch": "RRDBNet", "args": {"scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}},
        "data.patch_size": 32, "data.batch_size": 2, "train.iterations": 3, "val": [],
        "train.pixel_loss": {"type": "L1", "weight": 0.01},
        "train.perceptual_loss": {"layer_weights": {"conv2_2": 1.0}, "vgg_weights": "random"},
        "train.gan": {"discriminator": {"arch": "UNetDiscriminatorSN", "args": {"num_feat": 8}},
                      "relativistic": True, "weight": 0.005, "optimizer": {"lr": 1e-4}},
    })
    config = load_config(path)
    trainer = Trainer(config, quiet=True)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3]
    assert all({"l_pix", "l_percep", "l_g_gan", "l_d", "d_real", "d_fake"} <= set(r) for r in records)
    state = torch.load(tmp_path / "run" / "checkpoints" / "iter_000000003.pt", weights_only=True)
    assert {"net_d", "opt_d", "ema"} <= set(state)


def test_discriminator_trains_alone_for_d_init_iters(tmp_path, tiny_data):
    """``gan.d_init_iters`` (BasicSR's net_d_init_iters): G stays put while D warms up, then both move."""
    path = write_config(tmp_path, tiny_data, **{
        "scale": 4, "model": {"arch": "RRDBNet", "args": {"scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}},
        "data.patch_size": 32, "data.batch_size": 2, "train.iterations": 3, "val": [], "train.ema_decay": None,
        "train.gan": {"discriminator": {"arch": "UNetDiscriminatorSN", "args": {"num_feat": 8}}, "d_init_iters": 2},
    })
    trainer = Trainer(load_config(path), quiet=True)
    g0, d0 = trainer.net_g.conv_first.weight.clone(), trainer.net_d.conv0.weight.clone()
    for iteration, batch in steps(trainer, 3):
        logs = trainer.train_step(batch, iteration)
        assert torch.equal(trainer.net_g.conv_first.weight, g0) == (iteration < 2)
        assert ("l_g_gan" in logs) == (iteration >= 2) and "l_d" in logs
        assert not torch.equal(trainer.net_d.conv0.weight, d0)


def test_missing_vgg_weights_say_where_to_put_them(tmp_path):
    from superres.errors import SuperresError
    from superres.losses import PerceptualLoss

    with pytest.raises(SuperresError, match=r"vgg19-dcbb9e9d\.pth.*download"):
        PerceptualLoss({"conv5_4": 1.0}, weights=tmp_path / "vgg19-dcbb9e9d.pth")


GAN = {"train.gan": {"discriminator": {"arch": "UNetDiscriminatorSN", "args": {"num_feat": 4}},
                     "relativistic": True, "weight": 0.1}}


@pytest.mark.parametrize("changes", [{}, GAN], ids=["plain", "gan"])
def test_ddp_two_processes_match_one(tmp_path, tiny_data, changes):
    single = load_config(write_config(tmp_path / "one", tiny_data, **{"train.iterations": 4}, **changes))
    Trainer(single, quiet=True).fit()
    path = write_config(tmp_path / "two", tiny_data, **{"train.iterations": 4}, **changes)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "superres", "train", str(path), "-q"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    one, two = losses(tmp_path / "one" / "run"), losses(tmp_path / "two" / "run")
    assert sorted(two) == [1, 2, 3, 4]
    assert [two[i] for i in range(1, 5)] == pytest.approx([one[i] for i in range(1, 5)], rel=1e-5)
    a = load_model(tmp_path / "one" / "run" / "model.safetensors").module.state_dict()
    b = load_model(tmp_path / "two" / "run" / "model.safetensors").module.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_workers_do_not_change_the_samples_and_amp_runs(tmp_path, tiny_data):
    runs = {}
    for name, changes in {"w0": {}, "w2": {"data.workers": 2},
                          "amp": {"train.amp": "bf16", "train.channels_last": True, "train.grad_clip": 0.5}}.items():
        config = load_config(write_config(tmp_path / name, tiny_data, **{"train.iterations": 3, "val": [],
                                                                          **changes}))
        Trainer(config, quiet=True).fit()
        runs[name] = losses(tmp_path / name / "run")
    assert runs["w0"] == runs["w2"]
    # Same batch and weights at iteration 1. bf16 rounds the input and weights of each of FSRCNN's
    # 5 convs (2^-9 relative each, fp32 accumulation): <= 10 * 2^-9 = 2 % of the output, which moves
    # the Charbonnier loss by no more; 0.05 holds while |output| <= 2.5 x the loss (at init << 1 x).
    assert runs["amp"][1] == pytest.approx(runs["w0"][1], rel=0.05)


def test_shipped_schema_is_up_to_date():
    from superres.train import json_schema

    assert json.loads((CONFIGS / "schema.json").read_text()) == json_schema(), \
        "regenerate it: superres schema > configs/schema.json"


# --- Real-ESRGAN: degradations made on the training device --------------------------------------

REAL = {"scale": 4, "data.patch_size": 48, "data.batch_size": 2, "data.rot90": False, "val": [],
        "data.real": {"queue_size": 4, "gt_size": 32},
        "model": {"arch": "RRDBNet", "args": {"scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}},
        "train.pixel_loss": {"type": "L1"}, "train.iterations": 4}


def test_realesrnet_resumes_bit_exactly_with_its_pair_pool(tmp_path, tiny_data):
    """RealESRNet stage (L1 on the sharpened ground truth); the pool (full after 2 batches) is restored."""
    Trainer(load_config(write_config(tmp_path / "a", tiny_data, **REAL)), quiet=True).fit()
    straight = losses(tmp_path / "a" / "run")
    first = load_config(write_config(tmp_path / "b", tiny_data, **{**REAL, "train.iterations": 3}))
    Trainer(first, quiet=True).fit()
    Trainer(load_config(write_config(tmp_path / "b", tiny_data, **REAL)), resume="auto", quiet=True).fit()
    assert losses(tmp_path / "b" / "run")[4] == straight[4]
    state = torch.load(tmp_path / "a" / "run" / "checkpoints" / "iter_000000003.pt", weights_only=True)
    assert state["pool"]["filled"] == 4 and state["pool"]["lr"].shape == (4, 3, 8, 8)


def test_realesrgan_stage_runs(tmp_path, tiny_data):
    path = write_config(tmp_path, tiny_data, **{
        **REAL, "train.iterations": 3,
        "train.perceptual_loss": {"layer_weights": {"conv2_2": 0.1, "conv3_4": 1.0}, "vgg_weights": "random"},
        "train.gan": {"discriminator": {"arch": "UNetDiscriminatorSN", "args": {"num_feat": 8}},
                      "gan_type": "vanilla", "weight": 0.1}})
    trainer = Trainer(load_config(path), quiet=True)
    lr, targets = trainer.synthesize(torch.rand(2, 3, 48, 48), 0)
    assert lr.shape == (2, 3, 8, 8) and targets["pixel"].shape == (2, 3, 32, 32)
    assert torch.equal(lr, (lr * 255).round() / 255) and not torch.equal(targets["pixel"], targets["gan"])
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all({"l_pix", "l_percep", "l_g_gan", "l_d"} <= set(r) for r in records)


TINY_RRDB = ["model.pretrained=null", "model.args.num_feat=8", "model.args.num_block=1", "model.args.num_grow_ch=4",
             "val=[]", "train.iterations=2", "data.batch_size=2", "data.workers=0", "log.every=1",
             "log.tensorboard=false", "checkpoint.every=2", "train.gan.discriminator.args.num_feat=8"]


@pytest.mark.parametrize("recipe, changes", [
    ("esrgan_x4.yaml", ["data.patch_size=32", "train.gan.discriminator.args.input_size=32"]),
    ("realesrgan_x4plus.yaml", ["data.patch_size=48", "data.real.gt_size=32", "data.real.queue_size=4"]),
])
def test_gan_recipes_run_with_the_offline_vgg19(tmp_path, tiny_data, recipe, changes):
    """The recipes as shipped (their loss weights, the default VGG19: no file to supply), at tiny sizes."""
    config = load_config(CONFIGS / recipe, [*TINY_RRDB, *changes, f"data.hr={tiny_data / 'train'}",
                                            f"output={tmp_path / 'run'}"])
    assert config.train.perceptual_loss.vgg_weights is None
    trainer = Trainer(config, quiet=True)
    assert trainer.perceptual.vgg.caffe
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2]
    assert all(0 < r["l_percep"] < 100 and {"l_pix", "l_g_gan", "l_d"} <= set(r) for r in records), records
    assert load_model(tmp_path / "run" / "model.safetensors").scale == 4


def test_real_degradations_refuse_lr_folders(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="real degradations"):
        load_config(write_config(tmp_path, tiny_data, **{**REAL, "data.lr": str(tiny_data / "val")}))


# --- video networks on clips ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_data(tmp_path_factory, photos) -> Path:
    """Two real photos as stills (for camera-motion clips) and two rendered 5-frame test clips."""
    from superres.data.video import write_motion_clips

    root = tmp_path_factory.mktemp("clips")
    (root / "stills").mkdir()
    for name in ("astronaut", "chelsea"):
        write_image(root / "stills" / f"{name}.png", photos[name])
    write_motion_clips([str(root / "stills")], root / "val", count=2, frames=5, size=72, seed=1)
    return root


VIDEO = {"scale": 4, "data.patch_size": 64, "data.batch_size": 2, "train.iterations": 2,
         "train.ema_decay": None, "log.val_every": 2, "checkpoint.every": 2}


@pytest.mark.parametrize("arch, args, video", [
    ("BasicVSR", {"num_feat": 8, "num_block": 1}, {"frames": 4, "mode": "clip", "motion": {}}),
    ("EDVR", {"num_feat": 8, "num_frame": 3, "deformable_groups": 2, "num_extract_block": 1,
              "num_reconstruct_block": 1}, {"frames": 3, "mode": "window"}),
    ("VSRTransformer", {"num_feat": 8, "num_frame": 3, "feat_size": 16, "depth": 1, "num_extract_block": 1,
                        "num_reconstruct_block": 1, "patch_size": 4, "tile_overlap": 4},
     {"frames": 3, "mode": "clip"}),
], ids=["basicvsr-motion", "edvr-window", "vsrt-clip"])
def test_video_networks_train_and_validate_on_clips(tmp_path, tiny_data, clip_data, arch, args, video):
    hr = clip_data / ("stills" if "motion" in video else "val")
    val = [{"name": "clips", "hr": str(clip_data / "val"), "clips": True}]
    path = write_config(tmp_path, tiny_data, **{**VIDEO, "model": {"arch": arch, "args": args},
                                                "data.hr": str(hr), "data.video": video, "val": val})
    trainer = Trainer(load_config(path), quiet=True)
    batch = trainer.dataset[(0, 7)]
    frames = video["frames"]
    assert batch["lr"].shape == (frames, 3, 16, 16)
    assert batch["hr"].shape == ((3, 64, 64) if video["mode"] == "window" else (frames, 3, 64, 64))
    scores = trainer.fit()
    assert 10 < scores["clips"]["psnr"] < 60
    desc = load_model(tmp_path / "run" / "model.safetensors")
    assert desc.arch == arch and desc.purpose == "video"


def test_eval_scores_clips_per_clip_for_video_and_image_models(tmp_path, clip_data):
    from superres.archs import BasicVSR
    from superres.zoo import save_model

    save_model(BasicVSR(num_feat=8, num_block=1), tmp_path / "bv.safetensors")
    report = tmp_path / "report.json"
    for model, extra in ((str(tmp_path / "bv.safetensors"), []), ("bicubic", ["--clips"])):
        result = run_main("eval", clip_data / "val", "-m", model, "--scale", "4", "--json", report, *extra)
        assert result.returncode == 0, result.stderr
        rows = json.loads(report.read_text())
        assert [r["name"] for r in rows] == ["000", "001", "mean"] and rows[0]["frames"] == 5


def test_freeze_keeps_parameters_fixed_for_the_first_iterations(tmp_path, tiny_data):
    path = write_config(tmp_path, tiny_data, **{"train.iterations": 3, "val": [], "train.ema_decay": None,
                                                "train.freeze": {"first_part": 2}})
    trainer = Trainer(load_config(path), quiet=True)
    start = {k: v.clone() for k, v in trainer.net_g.state_dict().items()}
    for iteration, batch in steps(trainer, 3):
        trainer.train_step(batch, iteration)
        now = trainer.net_g.state_dict()
        assert torch.equal(now["first_part.0.weight"], start["first_part.0.weight"]) == (iteration < 2)
        assert not torch.equal(now["last_part.weight"], start["last_part.weight"])


def test_camera_flow_is_the_motion_of_the_synthetic_clips(clip_data):
    """The exact flow warps one LR frame onto the other (up to resampling): the ground truth that
    measures a video network's SPyNet (benchmarks/video_ablation.py)."""
    from superres.archs.spynet import flow_warp
    from superres.data.video import MotionFlows

    data = MotionFlows([str(clip_data / "stills")], 4, 96, max_shift=8.0)
    moved = aligned = 0.0
    for seed in range(8):
        s = data[(seed % 2, seed)]
        ref, supp, flow = s["ref"][None], s["supp"][None], s["flow"][None]
        assert ref.shape == supp.shape == (1, 3, 24, 24) and flow.shape == (1, 2, 24, 24)
        inner = (..., slice(3, -3), slice(3, -3))  # away from pixels whose match left the frame
        moved += (ref - supp)[inner].square().mean().item()
        aligned += (ref - flow_warp(supp, flow.permute(0, 2, 3, 1)))[inner].square().mean().item()
    assert aligned < 0.15 * moved


def test_init_loads_a_checkpoint_into_a_submodule(tmp_path, tiny_data, clip_data):
    """model.init: BasicVSR's SPyNet from its own file (as the paper starts from a pretrained SPyNet)."""
    from superres.errors import SuperresError
    from superres.zoo import create_model, save_model

    spynet = create_model("SpyNet").module
    with torch.no_grad():
        for p in spynet.parameters():
            p.normal_(0, 0.01)
    save_model(spynet, tmp_path / "spynet.safetensors")
    model = {"arch": "BasicVSR", "args": {"num_feat": 8, "num_block": 1},
             "init": {"spynet": str(tmp_path / "spynet.safetensors")}}
    changes = {**VIDEO, "model": model, "val": [], "data.hr": str(clip_data / "stills"),
               "data.video": {"frames": 3, "mode": "clip", "motion": {}}}
    trainer = Trainer(load_config(write_config(tmp_path, tiny_data, **changes)), quiet=True)
    loaded = trainer.net_g.spynet.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in spynet.state_dict().items())
    model["init"] = {"fusion": str(tmp_path / "spynet.safetensors")}
    with pytest.raises(SuperresError, match=r"spynet\.safetensors: cannot load into BasicVSR\.fusion"):
        Trainer(load_config(write_config(tmp_path, tiny_data, **changes)), quiet=True)
    model["init"] = {"spynet": str(tmp_path / "missing.safetensors")}
    with pytest.raises(ConfigError, match=r"model\.init\.spynet: no such file"):
        load_config(write_config(tmp_path, tiny_data, **changes))


def test_clip_sets_take_a_split(tmp_path, tiny_data, clip_data):
    from superres.data.video import eval_clips

    assert [name for name, _, _ in eval_clips(clip_data / "val", 4, include=["001"])] == ["001"]
    with pytest.raises(ConfigError, match="options of clip sets"):
        load_config(write_config(tmp_path, tiny_data, val=[{"name": "v", "hr": str(tiny_data / "val"),
                                                            "include": ["001"]}]))


def test_freeze_prefix_must_name_parameters(tmp_path, tiny_data):
    from superres.errors import SuperresError

    path = write_config(tmp_path, tiny_data, **{"val": [], "train.freeze": {"spynet": 5}})
    with pytest.raises(SuperresError, match=r"train\.freeze: no parameter of FSRCNN starts with 'spynet'"):
        Trainer(load_config(path), quiet=True)


def test_branches_first_trains_each_tan_branch_before_the_modulation(tmp_path, tiny_data, clip_data):
    """TAN's first stage: the loss is on every branch's estimate, so the modulation branch stays put."""
    from superres.errors import SuperresError

    tan = {"arch": "TemporalAdaptiveNet", "args": {"scale": 4, "num_in_ch": 3, "windows": [1, 3], "num_feat": [8, 8]}}
    path = write_config(tmp_path, tiny_data, **{**VIDEO, "model": tan, "val": [], "train.iterations": 3,
                                                "data.hr": str(clip_data / "stills"),
                                                "data.video": {"frames": 3, "mode": "window", "motion": {}},
                                                "train.branches_first": 2})
    trainer = Trainer(load_config(path), quiet=True)
    start = {k: v.clone() for k, v in trainer.net_g.state_dict().items()}
    for iteration, batch in steps(trainer, 3):
        logs = trainer.train_step(batch, iteration)
        now = trainer.net_g.state_dict()
        assert torch.equal(now["modulation.conv1.weight"], start["modulation.conv1.weight"]) == (iteration < 2)
        assert not torch.equal(now["branches.1.conv1.weight"], start["branches.1.conv1.weight"])
        if iteration == 0:  # the loss of the first stage is the sum of the branches' own losses
            with torch.no_grad():
                estimates = _tan(start, tan["args"])(batch["lr"], branches=True)
            expected = sum(torch.nn.functional.l1_loss(e, batch["hr"]) for e in estimates.unbind(1))
            assert logs["l_pix"] == pytest.approx(expected.item(), rel=1e-5)
    path = write_config(tmp_path, tiny_data, **{"val": [], "train.branches_first": 2})
    with pytest.raises(SuperresError, match=r"train\.branches_first: FSRCNN has no inference branches"):
        Trainer(load_config(path), quiet=True)
    with pytest.raises(ConfigError, match="pixel loss alone"):
        load_config(write_config(tmp_path, tiny_data, **{"val": [], "train.branches_first": 2,
                                                         "train.perceptual_loss": {"layer_weights": {"conv5_4": 1}}}))


def _tan(state: dict, args: dict):
    from superres.archs.tan import TemporalAdaptiveNet

    net = TemporalAdaptiveNet(**args)
    net.load_state_dict(state)
    return net


def test_single_frame_ablation_of_clips_trains_on_the_same_clips_frame_by_frame(tmp_path, tiny_data, clip_data):
    """data.video.single_frame in clip mode: the same clips as the multi-frame run, each frame fed on
    its own, so the ablation differs from it only in what the network may see."""
    video = {"frames": 3, "mode": "clip", "motion": {}}
    changes = {**VIDEO, "model": {"arch": "BasicVSR", "args": {"num_feat": 8, "num_block": 1}}, "val": [],
               "data.hr": str(clip_data / "stills"), "data.video": video}
    multi = Trainer(load_config(write_config(tmp_path / "multi", tiny_data, **changes)), quiet=True)
    single = Trainer(load_config(write_config(tmp_path / "single", tiny_data, **{
        **changes, "data.video": {**video, "single_frame": True}})), quiet=True)
    for key in ("lr", "hr"):
        assert torch.equal(multi.dataset[(1, 5)][key], single.dataset[(1, 5)][key])
    seen = []
    single.net_g.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    (iteration, batch), = steps(single, 1)
    single.train_step(batch, iteration)
    assert seen[0].shape == (2 * 3, 1, 3, 16, 16)
    assert torch.equal(seen[0][:, 0], batch["lr"].flatten(0, 1))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_current_iteration_and_resume_is_bit_exact(tmp_path, tiny_data, signum):
    """Ctrl-C (or a scheduler's SIGTERM) between checkpoints loses nothing: the last finished iteration
    is checkpointed (atomically) and --resume continues as if never stopped (checked after Ctrl-C)."""
    changes = {"train.iterations": 400, "checkpoint.every": 1000, "log.val_every": 1000,
               "train.scheduler": {"type": "MultiStep", "milestones": [100, 300], "gamma": 0.5}}
    straight_cfg = write_config(tmp_path / "a", tiny_data, **changes)
    config = write_config(tmp_path / "b", tiny_data, **changes)
    proc = subprocess.Popen([sys.executable, "-m", "superres", "train", str(config), "-q"], stderr=subprocess.PIPE,
                            text=True)
    log = tmp_path / "b" / "run" / "log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and (
            not log.exists() or log.read_text().count("\n") < 20):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signum)
    assert proc.wait(60) == 128 + signum, proc.stderr.read()
    ckpts = sorted((tmp_path / "b" / "run" / "checkpoints").iterdir())
    assert len(ckpts) == 1
    stopped = int(ckpts[0].stem.split("_")[1])
    # one line says what stopped it and what was saved, not as an error
    said = proc.stderr.read().strip()
    cause = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    assert said == (f"superres: stopped by {cause} (checkpoint of iteration {stopped} saved: {ckpts[0]}; "
                    f"superres train --resume {tmp_path / 'b' / 'run'} continues from it)"), said
    assert 20 <= stopped < 400 and max(losses(tmp_path / "b" / "run")) == stopped
    if signum != signal.SIGINT:  # what a resume does does not depend on the signal that stopped the run
        return

    assert main(["train", str(config), "-q", "--resume"]) == 0
    Trainer(load_config(straight_cfg), quiet=True).fit()
    straight, resumed = losses(tmp_path / "a" / "run"), losses(tmp_path / "b" / "run")
    assert sorted(resumed) == list(range(1, 401))
    assert [resumed[i] for i in range(stopped + 1, 401)] == [straight[i] for i in range(stopped + 1, 401)]
    a = load_model(tmp_path / "a" / "run" / "model.safetensors").module.state_dict()
    b = load_model(tmp_path / "b" / "run" / "model.safetensors").module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_run_refuses_to_train_over_the_first(tmp_path, tiny_data, capsys):
    config = write_config(tmp_path, tiny_data, **{"train.iterations": 2})
    assert main(["train", str(config), "-q", "--resume"]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "run" / "log.jsonl").exists()
    assert main(["train", str(config), "-q"]) == 0
    assert main(["train", str(config), "-q"]) == 1
    assert "--resume continues it, --overwrite starts again" in capsys.readouterr().err
    assert main(["train", str(config), "-q", "--overwrite"]) == 0
    assert sorted(losses(tmp_path / "run")) == [1, 2]  # no duplicated iterations in the log
