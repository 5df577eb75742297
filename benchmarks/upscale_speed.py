"""Speed of `superres upscale` on the CPU against the paths users run today, measured side by side.

For realesrgan-x4plus on real 128x128 and 256x256 photo crops, prints seconds and ratios:
- reference: the plain fp32 NCHW PyTorch forward (what Real-ESRGAN's inference script runs on a CPU);
- ours in fp32 on PyTorch (channels-last), and ours at the default (auto: bf16 on CPUs with
  native bf16, else fp32 on the ncnn backend), plus ours at bf16 where that is not the default
  (emulated bf16: slow, shown for accuracy) or ours at ``--precision fp32`` where it is not;
- the ncnn CPU runtime (PyPI ncnn, fp32, same thread count) on the same ncnn model files.
with the agreement of each output with the reference (max abs difference, PSNR).

    python benchmarks/upscale_speed.py [--threads 2] [--sizes 128 256] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from superres.infer import Upscaler
from superres.io import read_image
from superres.runtime import cpu_flags
from superres.zoo import MODELS, load_model
from superres.zoo.pretrained import source_files

SAMPLE = "src/superres/samples/astronaut.png"


def plain_forward(m, x: torch.Tensor) -> torch.Tensor:
    """RRDBNet's forward as the official code writes it (no strips, NCHW, fp32)."""
    feat = m.conv_first(x)
    feat = feat + m.conv_body(m.body(feat))
    feat = m.lrelu(m.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
    feat = m.lrelu(m.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
    return m.conv_last(m.lrelu(m.conv_hr(feat)))


def best_time(fn, repeat: int):
    out = fn()  # warm-up (also the output we compare)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def ncnn_runner(name: str, threads: int):
    """The ncnn runtime on the model's own .param/.bin files, or None without the ncnn package."""
    from superres.runner import NcnnRunner
    from superres.runtime import ncnn_available

    return NcnnRunner(*source_files(MODELS[name]), threads) if ncnn_available() else None


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bf16 = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
          f", native bf16: {', '.join(bf16) or 'no'}")
    module = load_model(args.model).module.eval()
    photo = read_image(SAMPLE)[0][..., :3]
    ours32 = Upscaler(args.model, tile=0, precision="fp32", device="cpu", backend="torch")
    ours = Upscaler(args.model, tile=0, device="cpu")
    # --precision fp32 as users run it (backend auto: ncnn where installed), where that is not the default
    ours32auto = None if ours.precision_used == "fp32" else Upscaler(args.model, tile=0, precision="fp32", device="cpu")
    ours16 = None if ours.precision_used == "bf16" else Upscaler(args.model, tile=0, precision="bf16", device="cpu")
    ncnn_run = ncnn_runner(args.model, args.threads)
    for size in args.sizes:
        img = np.ascontiguousarray(photo[100:100 + size, 150:150 + size])
        x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            t_ref, ref = best_time(lambda x=x: plain_forward(module, x), args.repeat)
        ref = ref[0].clamp(0, 1).permute(1, 2, 0).numpy()
        rows = [("reference fp32 NCHW", t_ref, ref)]
        rows.append(("ours fp32 --backend torch", *best_time(lambda img=img: ours32.upscale_array(img), args.repeat)))
        # the default on an 8-bit image, as users run it (auto keeps fp32 for 16-bit and float images);
        # its output is 8-bit, so it is compared with the reference rounded to 8 bits
        img8 = np.rint(img * 255).astype(np.uint8)
        t8, out8 = best_time(lambda img8=img8: ours.upscale_array(img8), args.repeat)
        rows.append((f"ours default ({ours.precision_used}), 8-bit", t8, out8.astype(np.float32) / 255,
                     np.rint(ref * 255) / 255))
        if ours32auto:
            rows.append((f"ours --precision fp32 ({ours32auto.backend_used})",
                         *best_time(lambda img=img: ours32auto.upscale_array(img), args.repeat)))
        if ours16:  # not the default here (no native bf16): shown for its accuracy
            rows.append(("ours --precision bf16", *best_time(lambda img=img: ours16.upscale_array(img), args.repeat)))
        if ncnn_run:
            rows.append(("ncnn fp32", *best_time(lambda img=img: ncnn_run(img), args.repeat)))
        print(f"\n{args.model}, input {size}x{size} -> {4 * size}x{4 * size}")
        for label, t, out, *against in rows:
            against = against[0] if against else ref  # 8-bit outputs: the reference rounded to 8 bits
            d = np.abs(out - against).max()
            print(f"  {label:<30} {t:8.2f} s   speed-up vs reference {t_ref / t:5.2f}x   "
                  f"max |diff| {d:.2e}   PSNR vs reference {psnr(out, against):6.1f} dB")
        if ncnn_run:
            print(f"  default vs ncnn: {rows[-1][1] / rows[2][1]:.2f}x")


if __name__ == "__main__":
    main()
