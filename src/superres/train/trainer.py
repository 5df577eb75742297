"""The training loop: pixel-loss SR and GAN SR (SRGAN, ESRGAN, Real-ESRGAN), resumable bit for bit.

One iteration = one global batch from :class:`~superres.data.paired.SampleStream`, a generator
update (pixel + perceptual + adversarial losses) and, with a GAN, a discriminator update in the
order of BasicSR's ESRGANModel. Under torchrun every process takes its share of the batch and
DistributedDataParallel averages the gradients, so N processes compute what one process with
the same global batch computes. Rank 0 logs, validates and saves.

With ``data.real`` (Real-ESRGAN) the data are HR patches only; :meth:`Trainer.synthesize`
degrades them on the training device, crops, and passes them through the training pair pool;
the pixel and perceptual losses may target the USM-sharpened ground truth, as the official code.

A checkpoint holds everything the next iteration depends on (weights, EMA, optimizer and
scheduler states, RNG states, the pair pool, the iteration; the data stream and the degradations
are functions of the iteration), so a run stopped at iteration k and resumed produces the same
losses as one that never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from superres.data.degradations import PairPool, degrade, paired_random_crop, usm_sharpen
from superres.data.paired import PairedPatches, SampleStream, eval_pairs, sample_seed
from superres.data.video import MotionClips, VideoClips, eval_clips
from superres.errors import SuperresError, Terminated
from superres.io import atomic_write, list_images
from superres.losses import GANLoss, PerceptualLoss, pixel_loss
from superres.metrics.evaluate import EVAL_OPTIONS, clip_runner, evaluate, evaluate_clips, mean_scores
from superres.runner import Runner
from superres.runtime import DTYPES, pick_device
from superres.train.checkpoint import (
    checkpoint_path,
    find_resume,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from superres.train.config import RUN_CONFIG, Config, Optimizer, missing_submodule
from superres.train.schedules import build_scheduler
from superres.zoo import create_model, describe, load_model, save_model


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _pick_device(name: str, rank: int) -> torch.device:
    """``pick_device``'s choice; under DDP each process on a machine takes its own GPU."""
    device = pick_device(name)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % max(1, torch.cuda.device_count()))
    return device


def build_optimizer(params: list[tuple[str, nn.Parameter]], cfg: Optimizer) -> torch.optim.Optimizer:
    """One parameter group per lr multiplier (longest matching name prefix wins)."""
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in params:
        prefixes = [k for k in cfg.lr_multipliers if name.startswith(k)]
        factor = cfg.lr_multipliers[max(prefixes, key=len)] if prefixes else 1.0
        groups.setdefault(factor, []).append(p)
    param_groups = [{"params": ps, "lr": cfg.lr * f} for f, ps in groups.items()]
    if cfg.type == "SGD":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.type == "Adam" else torch.optim.AdamW
    return cls(param_groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _create(arch: str, args: dict, where: str):
    try:
        return create_model(arch, **args)
    except (TypeError, ValueError) as e:  # the constructor's own checks of its arguments
        raise SuperresError(f"{where}: {arch}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None


def _trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def _held_out(config: Config) -> set[Path]:
    """The validation images that also sit in a training folder: they are left out of training
    (with a warning), so a validation set can be a slice of the training folders."""
    val = {f.resolve() for v in config.val if not v.clips for f in list_images(v.hr)[:v.max_images]}
    train = {f.resolve() for folder in config.data.hr for f in list_images(folder)}
    held = val & train
    if held:
        warnings.warn(f"{len(held)} validation image(s) found in the training folders are left out of training",
                      stacklevel=3)
    return held


class Trainer:
    """Builds everything a :class:`Config` describes and runs it: ``Trainer(config).fit()``."""

    def __init__(self, config: Config, resume: str | None = None, quiet: bool = False, overwrite: bool = False,
                 progress_bar: Callable | None = None):
        self.cfg, self.quiet = config, quiet
        self.progress_bar = progress_bar  # makes the bar (the CLI's: plain lines in a log); None: tqdm's
        self._stop: int | None = None  # the signal that asked training to stop after this iteration
        self.writer = None
        self.rank, self.world = _rank_world()
        self.device = _pick_device(config.device, self.rank)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.out = config.output_dir
        self.ckpt_dir = self.out / "checkpoints"
        if resume is None:
            self._claim_output(overwrite)
        if self.rank == 0:
            self._remove_stale_temporaries()
        torch.manual_seed(config.seed)

        self.net_g = self._build(config.model, "model")
        t = config.train
        self.opt_g = build_optimizer(_trainable(self.net_g), t.optimizer)
        self.frozen_groups = []  # (iterations, parameters) of each train.freeze prefix, resolved once
        for prefix, until in t.freeze.items():
            params = [p for name, p in self.net_g.named_parameters() if name.startswith(prefix)]
            if not params:
                raise SuperresError(f"{config.name}: train.freeze: no parameter of {config.model.arch} starts with "
                                    f"{prefix!r}")
            self.frozen_groups.append((until, params))
        if t.branches_first and not hasattr(self.net_g, "branches"):
            raise SuperresError(f"{config.name}: train.branches_first: {config.model.arch} has no inference "
                                "branches to train first")
        self.sched_g = build_scheduler(self.opt_g, t.scheduler, t.warmup_iters)
        self.ema = None
        if t.ema_decay:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.net_g, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
            self.ema.update_parameters(self.net_g)  # starts at the initial weights, as BasicSR's model_ema(0)
        self.pixel = pixel_loss(t.pixel_loss.type, t.pixel_loss.eps).to(self.device) if t.pixel_loss else None
        self.perceptual = None
        if t.perceptual_loss:
            p = t.perceptual_loss
            try:
                self.perceptual = PerceptualLoss(p.layer_weights, p.vgg_weights, p.use_input_norm, p.criterion)
            except SuperresError as e:  # a missing, refused or foreign VGG19 file: say which setting named it
                raise SuperresError(f"{config.name}: train.perceptual_loss.vgg_weights: {e}") from None
            self.perceptual.to(self.device)
        self.net_d = self.opt_d = self.sched_d = None
        if t.gan:
            self.net_d = self._build(t.gan.discriminator, "train.gan.discriminator")
            self.opt_d = build_optimizer(_trainable(self.net_d), t.gan.optimizer)
            self.sched_d = build_scheduler(self.opt_d, t.gan.scheduler)
            self.gan_loss = GANLoss(t.gan.gan_type)
        if self.pixel is None and self.perceptual is None and self.net_d is None:
            raise SuperresError(f"{config.name}: no loss configured (pixel_loss, perceptual_loss or gan)")
        self.amp_dtype = None if t.amp == "none" else DTYPES[t.amp]
        use_scaler = t.amp == "fp16" and self.device.type == "cuda"
        if self.device.type == "cuda" and t.amp == "none":
            # fp32 matrix products and convolutions on tensor cores (TF32: 10-bit mantissa products, fp32
            # sums), as cuDNN does by default for convolutions; fit() says so when it starts.
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

        self.real = config.data.real
        self.pool = PairPool(self.real.queue_size) if self.real else None
        if self.real and self.real.queue_size % (config.data.batch_size // self.world):
            raise SuperresError(f"{config.name}: data.real.queue_size {self.real.queue_size} is not a multiple of "
                                f"the batch per process ({config.data.batch_size // self.world})")
        self.start_iter = 0
        self.best: dict = {}
        path = find_resume(self.ckpt_dir, resume)
        if path is not None:
            self._restore(load_checkpoint(path), path)
            if self.rank == 0:
                self._forget_log_after(self.start_iter)
        self.g = self._wrap(self.net_g)
        self.d = self._wrap(self.net_d) if self.net_d is not None else None

        self.dataset = self._dataset(config)
        self.val_sets = []
        if self.rank == 0:
            for v in config.val:
                if v.clips:
                    data = eval_clips(v.hr, config.scale, v.lr, v.degradation, v.max_images, v.include)
                else:
                    data = eval_pairs(v.hr, config.scale, v.lr, v.degradation, v.max_images)
                self.val_sets.append((v, data))

    def _claim_output(self, overwrite: bool) -> None:
        """A fresh run never trains over an earlier one (its checkpoints and log) unless told to."""
        earlier = list_checkpoints(self.ckpt_dir) or (self.out / "log.jsonl").exists()
        if not earlier:
            return
        if not overwrite:
            raise SuperresError(f"{self.out}: holds an earlier run of this config; --resume continues it, "
                                "--overwrite starts again from scratch")
        if self.rank == 0:
            for _, old in list_checkpoints(self.ckpt_dir):
                old.unlink()
            (self.out / "log.jsonl").unlink(missing_ok=True)

    def _remove_stale_temporaries(self) -> None:
        """What saves killed half-way (SIGKILL, a power cut) left: the temporary files of checkpoints, exports,
        the log and the settings whose processes are gone."""
        from superres.io.files import remove_stale_temps_in

        for folder in (self.ckpt_dir, self.out):
            remove_stale_temps_in(folder)

    def _forget_log_after(self, iteration: int) -> None:
        """Drop the log records past the checkpoint resumed from: those iterations run again."""
        log = self.out / "log.jsonl"
        if log.exists():
            lines = [line for line in log.read_text().splitlines() if json.loads(line).get("iter", 0) <= iteration]
            atomic_write(log, "".join(line + "\n" for line in lines).encode())

    # --- building ---------------------------------------------------------------------------

    def _build(self, m, key: str) -> nn.Module:
        if m.pretrained:
            desc = load_model(m.pretrained)
            if desc.arch != m.arch:
                raise SuperresError(f"{m.pretrained}: is a {desc.arch}, the config says {m.arch}")
            net = _create(m.arch, {**desc.kwargs, **m.args}, f"{self.cfg.name}: {key}.args").module
            net.load_state_dict(desc.module.state_dict(), strict=True)
        else:
            net = _create(m.arch, m.args, f"{self.cfg.name}: {key}.args").module
        for name, file in m.init.items():
            problem = missing_submodule(net, name, m.arch)
            if problem:
                raise SuperresError(f"{self.cfg.name}: {key}.init.{name}: {problem}")
            part = net.get_submodule(name) if name else net
            try:
                part.load_state_dict(load_model(file).module.state_dict(), strict=True)
            except (AttributeError, RuntimeError) as e:
                raise SuperresError(f"{file}: cannot load into {m.arch}.{name}: {str(e).splitlines()[0]}") from None
        net = net.to(self.device)
        if self.cfg.train.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    @staticmethod
    def _dataset(config: Config):
        d, v = config.data, config.data.video
        if v is None:
            return PairedPatches(d.hr, config.scale, d.patch_size, d.lr, "none" if d.real else d.degradation,
                                 d.y_channel, d.flip, d.rot90, d.hr_scales, d.cache, _held_out(config))
        if v.motion is not None:
            return MotionClips(d.hr, config.scale, d.patch_size, v.frames, v.mode, d.degradation, d.flip, d.rot90,
                               v.reverse, v.motion.max_shift, v.motion.max_zoom, v.motion.max_rotation,
                               v.single_frame)
        return VideoClips(d.hr, config.scale, d.patch_size, v.frames, v.mode, d.lr, d.degradation, d.flip, d.rot90,
                          v.reverse, v.include, v.exclude, v.single_frame)

    def _wrap(self, net: nn.Module) -> nn.Module:
        if self.world == 1:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # --- checkpoints ------------------------------------------------------------------------

    def _state(self, iteration: int) -> dict:
        state = {"iteration": iteration, "net_g": self.net_g.state_dict(), "opt_g": self.opt_g.state_dict(),
                 "sched_g": self.sched_g.state_dict(), "scaler_g": self.scaler_g.state_dict(),
                 "torch_rng": torch.get_rng_state(), "best": dict(self.best)}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.net_d is not None:
            state.update(net_d=self.net_d.state_dict(), opt_d=self.opt_d.state_dict(),
                         sched_d=self.sched_d.state_dict(), scaler_d=self.scaler_d.state_dict())
        if self.pool is not None:
            state["pool"] = self.pool.state_dict()
        return state

    def _restore(self, state: dict, path: Path) -> None:
        try:
            self.net_g.load_state_dict(state["net_g"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.sched_g.load_state_dict(state["sched_g"])
            self.scaler_g.load_state_dict(state["scaler_g"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            if self.net_d is not None:
                self.net_d.load_state_dict(state["net_d"])
                self.opt_d.load_state_dict(state["opt_d"])
                self.sched_d.load_state_dict(state["sched_d"])
                self.scaler_d.load_state_dict(state["scaler_d"])
            if self.pool is not None:
                self.pool.load_state_dict(state["pool"], self.device)
        except (KeyError, RuntimeError, ValueError) as e:
            raise SuperresError(f"{path}: does not match this config ({type(e).__name__}: {e})") from None
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.start_iter = int(state["iteration"])
        self.best = dict(state.get("best", {}))

    def _save(self, iteration: int) -> None:
        if self.rank == 0:
            save_checkpoint(self.ckpt_dir, iteration, self._state(iteration), self.cfg.checkpoint.keep_last)

    def _export(self, path: Path, iteration: int) -> None:
        net = self.ema.module if self.ema is not None else self.net_g
        save_model(net, path, provenance=f"superres train {self.cfg.name}, iteration {iteration}")

    # --- one iteration ----------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _step(self, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor,
              params, frozen: list[nn.Parameter] = ()) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        for p in frozen:  # no gradient: the optimizer leaves it (and its state) alone
            p.grad = None
        if self.cfg.train.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        scaler.step(opt)
        scaler.update()

    @torch.no_grad()
    def synthesize(self, gt: torch.Tensor, iteration: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Real-ESRGAN's training pair: LR by the degradation model, cropped, through the pair pool.

        Returns the LR batch and the targets of the pixel, perceptual and GAN losses (the
        ground truth, or its USM-sharpened version where the config says so). The randomness is
        a function of (seed, iteration, rank), so a resumed run makes the same pairs.
        """
        r, scale = self.real, self.cfg.scale
        seed = sample_seed(self.cfg.seed, iteration * self.world + self.rank)
        lr = degrade(usm_sharpen(gt, r.usm_weight, r.usm_radius, r.usm_threshold), scale, r, seed)
        cpu = torch.Generator().manual_seed(seed + 2)
        if r.gt_size:
            (gt,), lr = paired_random_crop([gt], lr, r.gt_size, scale, cpu)
        lr, gt = self.pool(lr.contiguous(), gt.contiguous(), cpu)
        sharp = usm_sharpen(gt, r.usm_weight, r.usm_radius, r.usm_threshold)
        return lr, {"pixel": sharp if r.usm_pixel else gt, "perceptual": sharp if r.usm_perceptual else gt,
                    "gan": sharp if r.usm_gan else gt}

    def train_step(self, batch: dict[str, torch.Tensor], iteration: int) -> dict[str, float]:
        if self.real is not None:
            lr, targets = self.synthesize(batch["hr"].to(self.device), iteration)
        else:
            lr, hr = batch["lr"].to(self.device), batch["hr"].to(self.device)
            video = self.cfg.data.video
            if video is not None and video.single_frame and video.mode == "clip":  # each frame a clip of its own
                lr, hr = lr.flatten(0, 1).unsqueeze(1), hr.flatten(0, 1).unsqueeze(1)
            targets = {"pixel": hr, "perceptual": hr, "gan": hr}
        if self.cfg.train.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        gan = self.cfg.train.gan
        logs: dict[str, float] = {}
        update_g = gan is None or (iteration % gan.d_steps == 0 and iteration >= gan.d_init_iters)
        if self.d is not None:
            self.net_d.requires_grad_(False)
        branches = iteration < self.cfg.train.branches_first  # first stage: each inference branch alone
        with self._autocast(), torch.set_grad_enabled(update_g):  # D-only steps need no graph through G
            sr = self.g(lr, branches=True) if branches else self.g(lr)
        if update_g:
            with self._autocast():
                losses = {}
                if branches:
                    losses["l_pix"] = self.cfg.train.pixel_loss.weight * sum(
                        self.pixel(estimate.float(), targets["pixel"]) for estimate in sr.unbind(1))
                elif self.pixel is not None:
                    losses["l_pix"] = self.cfg.train.pixel_loss.weight * self.pixel(sr.float(), targets["pixel"])
                if self.perceptual is not None:
                    losses["l_percep"] = self.cfg.train.perceptual_loss.weight * self.perceptual(
                        sr.float(), targets["perceptual"])
                if self.d is not None:  # D's weights are frozen here: no DDP wrapper (no gradient sync)
                    fake = self.net_d(sr)
                    if gan.relativistic:
                        real = self.net_d(targets["gan"]).detach()
                        adv = self.gan_loss.relativistic(real.float(), fake.float(), for_discriminator=False)
                    else:
                        adv = self.gan_loss(fake.float(), True, for_discriminator=False)
                    losses["l_g_gan"] = gan.weight * adv
            total = sum(losses.values())
            frozen = [p for until, params in self.frozen_groups if iteration < until for p in params]
            self._step(self.opt_g, self.scaler_g, total, self.net_g.parameters(), frozen)
            logs.update({k: v.item() for k, v in losses.items()}, l_total=total.item())
        if self.d is not None:
            self.net_d.requires_grad_(True)
            with self._autocast():
                real, fake = self.d(targets["gan"]).float(), self.d(sr.detach()).float()
                if gan.relativistic:
                    l_d = self.gan_loss.relativistic(real, fake, for_discriminator=True)
                else:  # summed, as BasicSR's SRGANModel and RealESRGANModel back-propagate both terms
                    l_d = self.gan_loss(real, True) + self.gan_loss(fake, False)
            self._step(self.opt_d, self.scaler_d, l_d, self.net_d.parameters())
            self.sched_d.step()
            logs.update(l_d=l_d.item(), d_real=real.mean().item(), d_fake=fake.mean().item())
        if update_g:
            self.sched_g.step()
        else:  # G's schedule counts every iteration (BasicSR's), D-only ones too, which PyTorch warns about
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
                self.sched_g.step()
        if self.ema is not None:
            self.ema.update_parameters(self.net_g)
        return logs

    # --- validation and logging -------------------------------------------------------------

    def validate(self, iteration: int) -> dict[str, dict[str, float]]:
        """Every validation set scored as ``superres eval`` scores it (fp32, whole images or clips)."""
        net = self.ema.module if self.ema is not None else self.net_g
        desc = describe(net)
        options = dataclasses.replace(EVAL_OPTIONS, device=str(self.device))
        video = self.cfg.data.video
        net.eval()
        results = {}
        for v, pairs in self.val_sets:
            if v.clips:
                runner = clip_runner(desc, options, frames=video.frames if video else None,
                                     single_frame=v.single_frame)
                records = evaluate_clips(runner, pairs, v.y_channel, v.crop_border or 0,
                                         keep_outputs=self.writer is not None)
            else:
                records = evaluate(Runner(desc, options), pairs, v.y_channel, v.crop_border,
                                   keep_outputs=self.writer is not None)
            results[v.name] = mean_scores(records)
            if self.writer is not None:
                for r in records[: self.cfg.log.val_samples]:
                    self.writer.add_image(f"val/{v.name}/{r['name']}", r["output"], iteration, dataformats="HWC")
        net.train()
        return results

    def _log(self, record: dict) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "iter" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, record["iter"])

    def _open_writer(self):
        if self.rank != 0 or not self.cfg.log.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("superres: tensorboard is not installed; logging to log.jsonl only "
                  "(pip install tensorboard)", file=sys.stderr)
            return None
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.start_iter or None)

    # --- the loop ---------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train to ``train.iterations``; returns the last validation scores."""
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        cfg = self.cfg
        total = cfg.train.iterations
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            # the settings --resume continues with (load_run_config), written whole or not at all
            saved = cfg.model_copy(update={"output": str(self.out.resolve())})
            atomic_write(self.out / RUN_CONFIG, (saved.model_dump_json(indent=2) + "\n").encode())
            if not self.quiet:
                tf32 = " (TF32 tensor cores)" if self.device.type == "cuda" and cfg.train.amp == "none" else ""
                precision = "fp32" if cfg.train.amp == "none" else f"{cfg.train.amp} autocast"
                layout = ", channels-last" if cfg.train.channels_last else ""
                print(f"superres: training on {self.device} in {precision}{tf32}{layout}", file=sys.stderr)
        self.writer = self._open_writer()
        sampler = SampleStream(len(self.dataset), cfg.data.batch_size, cfg.seed, self.start_iter,
                               self.rank, self.world)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=cfg.data.workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=cfg.data.workers > 0)
        batches = iter(loader)
        self.net_g.train()
        scores: dict = {}
        make_bar = self.progress_bar or functools.partial(tqdm, dynamic_ncols=True)
        bar = make_bar(total=total, initial=self.start_iter, desc=cfg.name, unit="it",
                       disable=self.quiet or self.rank != 0)
        tic, window = time.perf_counter(), self.start_iter
        done = self.start_iter
        with self._stop_between_iterations():
            for iteration in range(self.start_iter, total):
                if self._stop is not None:
                    break
                try:
                    batch = next(batches)
                except Exception:
                    if self._stop is None:  # data loader workers die of the same Ctrl-C
                        raise
                    break
                logs = self.train_step(batch, iteration)
                if self.world > 1:  # log the global batch's losses, not rank 0's share
                    values = torch.tensor(list(logs.values()), dtype=torch.float64)
                    dist.all_reduce(values)
                    logs = dict(zip(logs, (values / self.world).tolist(), strict=True))
                done = iteration + 1
                bar.update(1)
                if logs and not all(math.isfinite(v) for v in logs.values()):
                    raise SuperresError(f"{cfg.name}: loss is not finite at iteration {done} ({logs}); "
                                        "lower the learning rate or enable grad_clip")
                if self.rank == 0 and (done % cfg.log.every == 0 or done == total):
                    now = time.perf_counter()
                    rate = (done - window) / (now - tic)
                    tic, window = now, done
                    bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k.startswith("l_")})
                    self._log({"iter": done, **logs, "lr": self.opt_g.param_groups[0]["lr"], "it_per_s": rate})
                if self.val_sets and (done % cfg.log.val_every == 0 or done == total):
                    scores = self.validate(done)
                    self._log({"iter": done, **{f"val/{n}/{k}": v for n, s in scores.items() for k, v in s.items()}})
                    if not self.quiet:
                        bar.write(f"iter {done}: " + ", ".join(f"{n} {s['psnr']:.3f} dB / {s['ssim']:.4f}"
                                                               for n, s in scores.items()))
                    self._keep_best(scores, done)
                if done % cfg.checkpoint.every == 0 or done == total:
                    self._save(done)
                    if self.world > 1:
                        dist.barrier()
        bar.close()
        if self._stop is not None:
            self._save_on_stop(done)
        if self.rank == 0:
            self._export(self.out / "model.safetensors", total)
        if self.writer is not None:
            self.writer.close()
        return scores

    @contextlib.contextmanager
    def _stop_between_iterations(self):
        """SIGINT and SIGTERM stop training at the end of the current iteration (a checkpoint of a
        half-applied optimizer step could not resume exactly); a second signal stops at once. Single
        process, main thread only: under torchrun the ranks could stop at different iterations."""
        if self.world > 1 or threading.current_thread() is not threading.main_thread():
            yield
            return
        signums = [signal.SIGINT, *([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])]
        old = {}

        def handler(signum, _frame):
            if self._stop is not None:  # the second time: now
                raise Terminated(signum) if signum != signal.SIGINT else KeyboardInterrupt
            self._stop = signum

        for signum in signums:
            old[signum] = signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum, previous in old.items():
                signal.signal(signum, previous)

    def _save_on_stop(self, done: int) -> None:
        """Checkpoint the last finished iteration (atomically), then stop as the signal asked."""
        if done > self.start_iter and (done, checkpoint_path(self.ckpt_dir, done)) not in list_checkpoints(
                self.ckpt_dir):
            self._save(done)
        if self.writer is not None:
            self.writer.close()
        # said once, by the command, on the line that says what stopped it
        saved = (f"checkpoint of iteration {done} saved: {checkpoint_path(self.ckpt_dir, done)}; superres train "
                 f"--resume {self.out} continues from it") if done else "stopped before the first iteration ended"
        raise KeyboardInterrupt(saved) if self._stop == signal.SIGINT else Terminated(self._stop, saved)

    def _keep_best(self, scores: dict, iteration: int) -> None:
        """Export the generator whose PSNR on the first validation set is the highest so far."""
        name, psnr = self.cfg.val[0].name, scores[self.cfg.val[0].name]["psnr"]
        if psnr > self.best.get("psnr", -math.inf):
            self.best = {"psnr": psnr, "iter": iteration, "set": name}
            self._export(self.out / "best.safetensors", iteration)


def train(config: Config, resume: str | None = None, quiet: bool = False, overwrite: bool = False,
          progress_bar: Callable | None = None) -> dict:
    """Run a config to the end (resuming if asked, or over an earlier run with ``overwrite``); returns
    the final validation scores. SIGINT/SIGTERM save the last finished iteration and stop.
    ``progress_bar``: what makes the progress bar (tqdm's arguments; default tqdm itself)."""
    trainer = Trainer(config, resume, quiet, overwrite, progress_bar)
    try:
        return trainer.fit()
    finally:
        if trainer.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["Trainer", "build_optimizer", "train"]
