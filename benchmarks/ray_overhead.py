"""Ray's overhead per image against a local run of the same folder, side by side in one run.

A folder of real 256x256 photo crops (the bundled samples) is upscaled with the same model and options twice
per round: by the local executor (this process: decode and encode in threads beside the network, as
``superres upscale`` runs) and by the Ray executor on a Ray instance started here (one worker holding all of
this machine's CPUs, as ``--ray`` on one machine gives). Printed per run: the start (model loaded; for Ray,
also the worker process started), the time per image once started, and the total; then Ray's overhead per
image (best round of each). The outputs are compared byte for byte.

    python benchmarks/ray_overhead.py [--images 16] [--size 256] [--rounds 2] [--model realesr-animevideov3]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

from superres.infer.executors import ImageUnit, LocalExecutor, RayExecutor, image_engine
from superres.io import read_image, write_image
from superres.runtime import RunOptions

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "superres" / "samples"


def make_folder(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` size x size crops of the bundled photos, on a grid over each."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = [read_image(p)[0] for p in sorted(SAMPLES.glob("*.png"))]
    files = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        k = i // len(photos)
        y, x = (k * 37) % (h - size + 1), (k * 53) % (w - size + 1)
        files.append(folder / f"{i:03d}.png")
        write_image(files[-1], photo[y:y + size, x:x + size])
    return files


def timed_local(make, files: list[Path], out: Path) -> tuple[float, float]:
    """(start, seconds per image) of the local executor."""
    t0 = time.perf_counter()
    executor = LocalExecutor(make)
    executor.engine  # noqa: B018  (loads the model: the start)
    start = time.perf_counter() - t0
    t1 = time.perf_counter()
    done, failed = executor.run([ImageUnit(f, out / f.name, check=False) for f in files], lambda u, t: None,
                                lambda u, m: print(m))
    assert (done, failed) == (len(files), 0)
    return start, (time.perf_counter() - t1) / len(files)


def timed_ray(make, files: list[Path], out: Path) -> tuple[float, float]:
    """(start, seconds per image) of the Ray executor: the start ends when the first worker is ready."""
    ready: list[float] = []
    t0 = time.perf_counter()
    executor = RayExecutor(make, "auto", on_worker=lambda w: ready.append(time.perf_counter()))
    done, failed = executor.run([ImageUnit(f, out / f.name, check=False) for f in files], lambda u, t: None,
                                lambda u, m: print(m))
    end = time.perf_counter()
    assert (done, failed) == (len(files), 0)
    return ready[0] - t0, (end - ready[0]) / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="realesr-animevideov3")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import ray

    cpus = os.cpu_count() or 1
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")  # one node: one worker, all CPUs
    make = functools.partial(image_engine, args.model, RunOptions(device=args.device))
    root = Path(tempfile.mkdtemp(prefix="superres-ray-overhead-"))
    try:
        files = make_folder(root / "in", args.images, args.size)
        runs: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
        for r in range(args.rounds):  # the two take turns: the machine's drift hits both
            for name, timed in (("local", timed_local), ("ray", timed_ray)):
                out = root / f"{name}{r}"
                runs[name].append(timed(make, files, out))
        same = all((root / "local0" / f.name).read_bytes() == (root / "ray0" / f.name).read_bytes() for f in files)
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   "unknown CPU") if os.path.exists("/proc/cpuinfo") else "unknown CPU"
        print(f"{args.model}, {args.images} photos {args.size}x{args.size} on {args.device}; {cpu}, {cpus} CPUs; "
              f"ray {ray.__version__}")
        print(f"{'run':<34}{'start s':>9}{'s/image':>10}{'total s':>10}")
        for name, label in (("local", "local (this process)"), ("ray", f"ray (1 worker, {cpus} CPUs)")):
            for start, per in runs[name]:
                print(f"{label:<34}{start:>9.2f}{per:>10.3f}{start + per * args.images:>10.2f}")
        local, remote = min(p for _, p in runs["local"]), min(p for _, p in runs["ray"])
        print(f"Ray's overhead per image (best of {args.rounds}): {remote - local:+.3f} s ({remote / local - 1:+.1%}); "
              f"outputs byte-identical: {'yes' if same else 'NO'}")
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
