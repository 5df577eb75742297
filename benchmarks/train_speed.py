"""Training throughput on the CPU: ours against BasicSR's trainer, same settings, side by side.

MSRResNet x4 (16 blocks, 64 features), batch 16, 128x128 GT patches (32x32 LR), L1 loss, Adam
(2e-4, betas 0.9/0.99), flips and rotations, LR/GT pairs read from disk (T91 and its MATLAB
bicubic x4 LR) by one process with no DataLoader workers. BasicSR 1.4.2's ``SRModel`` with its
``PairedImageDataset`` (what ``basicsr/train.py`` runs per iteration: feed_data +
optimize_parameters) against our :class:`superres.train.Trainer` (``train_step`` on our
``PairedPatches`` batches, no cache). Prints iterations per second and the ratio.

    python benchmarks/train_speed.py [--iters 10] [--threads 2] [--data ../shared/data/T91]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml


def make_pairs(src: Path, root: Path, limit: int) -> tuple[Path, Path]:
    from superres.data.paired import degrade
    from superres.io import list_images, read_rgb8, write_image
    from superres.ops import modcrop

    gt, lq = root / "gt", root / "lq"
    gt.mkdir()
    lq.mkdir()
    for f in list_images(src)[:limit]:
        hr = modcrop(read_rgb8(f), 4)
        if min(hr.shape[:2]) < 128:
            continue
        write_image(gt / f.name, hr)
        write_image(lq / f.name, degrade(hr, 4, "bicubic"))
    return gt, lq


def basicsr_iterations(gt: Path, lq: Path, root: Path, iters: int) -> float:
    import torchvision.transforms.functional as functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)  # BasicSR 1.4.2 on new torchvision
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.models.sr_model import SRModel

    data_opt = {"dataroot_gt": str(gt), "dataroot_lq": str(lq), "io_backend": {"type": "disk"}, "gt_size": 128,
                "use_hflip": True, "use_rot": True, "scale": 4, "phase": "train", "filename_tmpl": "{}"}
    dataset = PairedImageDataset(data_opt)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=16 * (iters + 1))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, sampler=sampler, num_workers=0)
    opt = {"name": "bench", "model_type": "SRModel", "scale": 4, "num_gpu": 0, "is_train": True, "dist": False,
           "network_g": {"type": "MSRResNet", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 16,
                         "upscale": 4},
           "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None,
                    "experiments_root": str(root), "models": str(root), "training_states": str(root)},
           "train": {"ema_decay": 0, "optim_g": {"type": "Adam", "lr": 2e-4, "weight_decay": 0, "betas": [0.9, 0.99]},
                     "scheduler": {"type": "MultiStepLR", "milestones": [10**6], "gamma": 0.5},
                     "total_iter": iters, "warmup_iter": -1,
                     "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}},
           "val": None, "logger": {"print_freq": 10**6}}
    model = SRModel(opt)
    batches = iter(loader)

    def step(i: int) -> None:
        data = next(batches)
        model.update_learning_rate(i + 1, warmup_iter=-1)
        model.feed_data(data)
        model.optimize_parameters(i + 1)

    return timed(step, iters)


def our_iterations(gt: Path, lq: Path, root: Path, iters: int) -> float:
    from superres.train import Trainer, load_config

    config = {"name": "bench", "scale": 4, "output": str(root / "ours"), "device": "cpu",
              "model": {"arch": "MSRResNet", "args": {"num_feat": 64, "num_block": 16, "upscale": 4}},
              "data": {"hr": str(gt), "lr": str(lq), "patch_size": 128, "batch_size": 16, "cache": False},
              "train": {"iterations": iters, "optimizer": {"type": "Adam", "lr": 2e-4, "betas": [0.9, 0.99]},
                        "pixel_loss": {"type": "L1"}},
              "log": {"tensorboard": False}}
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    trainer = Trainer(load_config(path), quiet=True)
    from superres.data import SampleStream

    loader = torch.utils.data.DataLoader(trainer.dataset, batch_sampler=SampleStream(len(trainer.dataset), 16, 0))
    batches = iter(loader)
    trainer.net_g.train()
    return timed(lambda i: trainer.train_step(next(batches), i), iters)


def timed(step, iters: int) -> float:
    step(0)  # warm-up (allocations, first-call overheads)
    start = time.perf_counter()
    for i in range(1, iters + 1):
        step(i)
    return iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/T91"))
    parser.add_argument("--images", type=int, default=91, help="how many training images to use")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gt, lq = make_pairs(args.data, root, args.images)
        print(f"MSRResNet x4, batch 16, 128x128 GT, {len(list(gt.iterdir()))} images, {args.threads} threads, "
              f"{args.iters} iterations each")
        # alternate the two so that machine noise hits both alike
        ours, ref = [], []
        for _ in range(2):
            ref.append(basicsr_iterations(gt, lq, root, args.iters // 2))
            ours.append(our_iterations(gt, lq, root, args.iters // 2))
        r, o = max(ref), max(ours)
        print(f"BasicSR SRModel: {r:.3f} it/s")
        print(f"superres Trainer: {o:.3f} it/s")
        print(f"ratio (ours / BasicSR): {o / r:.2f}x")


if __name__ == "__main__":
    main()
