"""GPU end to end, side by side with the plain script a user would write (one prepared run, < 8 min).

Every figure is a ratio measured in this run, on the same inputs, made here from real photos:
1. video: ``superres video`` (CLI, defaults, realesr-animevideov3) on a 480p clip with audio, against
   the plain script (decode, fp16 NCHW forward, ``.cpu()``, encode, one frame at a time) and against
   the encoder alone (the same encoder settings on the same upscaled frames): the target is >= 0.95x
   of the encode-only rate, i.e. the network and decoding hidden behind the encoder;
2. folder: ``superres upscale`` (CLI, process start included) on 20 photos of mixed sizes against the
   plain script (read, fp16 forward of the whole image, write PNG): target <= 1.3x + 3 s;
3. one 1024x1024 8-bit image, realesrgan-x4plus: ``superres.upscale`` at the default against plain
   fp16 NCHW (target >= 1.15x), and with ``compile=True`` on repeated same-size inputs (>= 1.5x);
4. training: the ESRGAN PSNR recipe's network (RRDBNet 23 blocks, batch 16, 128 px) in bf16
   channels-last against fp32 (target >= 1.5x it/s);
5. every reduced-precision output against fp32: PSNR >= 50 dB;
6. the encoder probe: which encoder ``--codec auto`` picked on this GPU (NVENC only where it works).

    python benchmarks/gpu_pipeline.py [--frames 181] [--smoke]   (--smoke: tiny sizes, also on a CPU)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "superres" / "samples"


def photos() -> list[np.ndarray]:
    from superres.io import read_rgb8

    return [read_rgb8(p) for p in sorted(SAMPLES.glob("*.png"))]


def make_clip(path: Path, frames: int, size: tuple[int, int]) -> None:
    """A pan over a photo, H.264 with an AAC tone as long as the video."""
    import av
    import cv2

    big = cv2.resize(photos()[0], (size[0] + 2 * frames, size[1] + frames), interpolation=cv2.INTER_CUBIC)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        t = np.arange(48000 * frames // 30) / 48000
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(frames):
            crop = np.ascontiguousarray(big[i // 2:i // 2 + size[1], 2 * i:2 * i + size[0]])
            out.mux(video.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        for start in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, start:start + 1024].copy(), format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, start
            out.mux(audio.encode(chunk))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


def plain_video(src: Path, dst: Path, net: torch.nn.Module, device: torch.device, half: bool) -> list[np.ndarray]:
    """The obvious script: decode, forward, .cpu(), encode, one frame at a time; returns some frames."""
    import av

    kept = []
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = None
        for i, frame in enumerate(inp.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device).float() / 255
            with torch.inference_mode():
                y = net(x.half() if half else x).float().clamp(0, 1)
            sr = (y[0].permute(1, 2, 0) * 255).round().byte().cpu().numpy()
            if stream is None:
                stream = out.add_stream("libx264", rate=30)
                stream.width, stream.height, stream.pix_fmt = sr.shape[1], sr.shape[0], "yuv420p"
                stream.options = {"crf": "18", "preset": "veryfast"}
            out.mux(stream.encode(av.VideoFrame.from_ndarray(sr, format="rgb24")))
            if i < 8:
                kept.append(sr)
        out.mux(stream.encode(None))
    return kept


def encode_only(frames: list[np.ndarray], dst: Path, codec: str, count: int) -> float:
    """Seconds to encode ``count`` frames (cycling ``frames``) with the settings superres uses."""
    import av

    from superres.io.encoders import encoder_options

    tic = time.perf_counter()
    with av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = encoder_options(codec, 18, "veryfast")
        for i in range(count):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")))
        out.mux(stream.encode(None))
    return time.perf_counter() - tic


def cli(*args: str) -> float:
    tic = time.perf_counter()
    subprocess.run([sys.executable, "-m", "superres", *args, "-q"], check=True)
    return time.perf_counter() - tic


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def synced(fn, repeat: int) -> float:
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - tic) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=181)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    args = parser.parse_args()
    import superres
    from superres.io import write_image
    from superres.io.encoders import pick_encoder
    from superres.zoo import load_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    half = device.type == "cuda"
    frames, size = (6, (64, 48)) if args.smoke else (args.frames, (640, 480))
    side, photos_n, iters = (64, 3, 2) if args.smoke else (1024, 20, 20)
    print(f"device: {torch.cuda.get_device_name() if half else 'cpu'}, torch {torch.__version__}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # 1. video
        clip = root / "clip.mp4"
        make_clip(clip, frames, size)
        av3 = load_model("realesr-animevideov3").module.to(device).eval()
        av3 = av3.half() if half else av3
        t_ours = cli("video", str(clip), "-o", str(root / "ours.mp4"), "-m", "realesr-animevideov3")
        tic = time.perf_counter()
        kept = plain_video(clip, root / "plain.mp4", av3, device, half)
        t_plain = time.perf_counter() - tic
        codec = pick_encoder("auto")
        t_encode = encode_only(kept, root / "enc.mp4", codec, frames)
        results["video"] = (frames / t_ours, frames / t_plain, frames / t_encode)
        print(f"1. video {frames} frames {size[0]}x{size[1]} x4, encoder {codec}: superres video "
              f"{frames / t_ours:.1f} frames/s (CLI, process start included), plain script {frames / t_plain:.1f}, "
              f"encoder alone {frames / t_encode:.1f}: {t_encode / t_ours:.2f}x of encode-only (target >= 0.95), "
              f"{t_plain / t_ours:.2f}x the plain script")
        # 2. folder
        folder = root / "photos"
        folder.mkdir()
        rng = np.random.default_rng(0)
        images = photos()
        for i in range(photos_n):
            img = images[i % len(images)]
            h, w = (int(rng.integers(24, 48)), int(rng.integers(24, 48))) if args.smoke else \
                (int(rng.integers(600, 1200)), int(rng.integers(800, 1400)))
            import cv2

            write_image(folder / f"p{i:02d}.png", cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
        x4 = load_model("realesrgan-x4plus").module.to(device).eval()
        x4h = x4.half() if half else x4
        t_cli = cli("upscale", str(folder), "-o", str(root / "ours"))
        from superres.io import read_rgb8

        tic = time.perf_counter()
        (root / "plain").mkdir()
        for f in sorted(folder.iterdir()):
            x = torch.from_numpy(read_rgb8(f)).permute(2, 0, 1)[None].to(device).float() / 255
            with torch.inference_mode():
                y = x4h(x.half() if half else x).float().clamp(0, 1)
            write_image(root / "plain" / f.name, (y[0].permute(1, 2, 0) * 255).round().byte().cpu().numpy())
        t_plain_folder = time.perf_counter() - tic
        print(f"2. folder of {photos_n} photos, realesrgan-x4plus: CLI {t_cli:.2f} s, plain script "
              f"{t_plain_folder:.2f} s: {t_cli:.2f} <= 1.3 x {t_plain_folder:.2f} + 3 = "
              f"{1.3 * t_plain_folder + 3:.2f}: {'met' if t_cli <= 1.3 * t_plain_folder + 3 else 'NOT met'}")
        # 3. one 1024x1024 8-bit image
        img = np.ascontiguousarray(np.tile(images[0], (4, 4, 1))[:side, :side])
        xin = torch.from_numpy(img).permute(2, 0, 1)[None].to(device).float() / 255

        def plain():
            with torch.inference_mode():
                return x4h(xin.half() if half else xin)

        t_plain_img = synced(plain, iters)
        up = superres.Upscaler("realesrgan-x4plus")
        t_default = synced(lambda: up.upscale_array(img), iters)
        compiled = superres.Upscaler("realesrgan-x4plus", compile=True)
        tic = time.perf_counter()
        ref_out = compiled.upscale_array(img)
        t_compile = time.perf_counter() - tic
        t_compiled = synced(lambda: compiled.upscale_array(img), iters)
        fp32 = superres.Upscaler("realesrgan-x4plus", precision="fp32").upscale_array(img)
        default_out = up.upscale_array(img)
        print(f"3. {side}x{side} 8-bit x4plus: plain {'fp16' if half else 'fp32'} NCHW {t_plain_img * 1e3:.0f} ms, "
              f"default ({up.summary()}) {t_default * 1e3:.0f} ms = {t_plain_img / t_default:.2f}x (target >= 1.15), "
              f"compiled {t_compiled * 1e3:.0f} ms = {t_plain_img / t_compiled:.2f}x (target >= 1.5; compiling "
              f"took {t_compile:.0f} s)")
        print(f"5. default vs fp32: {psnr_db(default_out, fp32):.1f} dB, compiled vs fp32: "
              f"{psnr_db(ref_out, fp32):.1f} dB (target >= 50)")
        # 4. training speed
        from superres.zoo import create_model

        blocks, batch, patch = (2, 2, 32) if args.smoke else (23, 16, 128)
        speeds = {}
        for label, amp in (("fp32", None), ("bf16 channels-last", torch.bfloat16)):
            net = create_model("RRDBNet", num_block=blocks).module.to(device)
            if amp is not None:
                net = net.to(memory_format=torch.channels_last)
            opt = torch.optim.Adam(net.parameters(), 2e-4)
            lr = torch.rand(batch, 3, patch // 4, patch // 4, device=device)
            hr = torch.rand(batch, 3, patch, patch, device=device)
            if amp is not None:
                lr, hr = (t.contiguous(memory_format=torch.channels_last) for t in (lr, hr))

            def step(net=net, opt=opt, lr=lr, hr=hr, amp=amp):
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = torch.nn.functional.l1_loss(net(lr), hr)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            speeds[label] = 1 / synced(step, 3 if args.smoke else 10)
        print(f"4. training RRDBNet {blocks} blocks, batch {batch}, {patch} px: fp32 {speeds['fp32']:.2f} it/s, "
              f"bf16 channels-last {speeds['bf16 channels-last']:.2f} it/s = "
              f"{speeds['bf16 channels-last'] / speeds['fp32']:.2f}x (target >= 1.5)")
        print(f"6. --codec auto picked {codec} (NVENC only after a test encode works: {pick_encoder('auto')})")


if __name__ == "__main__":
    main()
