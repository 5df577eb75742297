"""Issue 28, "nothing lost, no surprises": no silent overwrites, honest errors, memory bounds."""

from __future__ import annotations

import numpy as np
import pytest

from superres.cli import main
from superres.io import write_image


@pytest.mark.parametrize("command", ["degrade", "resize"])
def test_degrade_and_resize_refuse_two_inputs_with_one_output(tmp_path, photos, command, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "photo.png", photos["chelsea"][:64, :64])
    write_image(src / "photo.jpg", photos["chelsea"][:64, :64])
    assert main([command, str(src), str(tmp_path / "out"), "--scale", "4", "-q"]) == 1
    err = capsys.readouterr().err
    assert "photo.jpg" in err and "photo.png" in err and "both be written" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("precision, backend", [("fp32", "auto"), ("fp32", "torch"), ("bf16", "torch"),
                                                ("fp32", "ncnn")])
def test_auto_tiles_fit_the_budget_on_every_precision_and_backend(precision, backend):
    """The working memory of one tile (activations on the backend that runs it + float output) stays
    within the budget; ncnn needs ~25x PyTorch's memory per pixel on RRDBNet."""
    from superres.infer import Upscaler
    from superres.zoo import MODELS

    spec = MODELS["realesrgan-x4plus"]
    budget = 1152 << 20
    up = Upscaler("realesrgan-x4plus", precision=precision, backend=backend, budget=budget)
    for side in (100, 600, 2000):
        used = up.backend(side, side, precision)
        if used == "ncnn" and side > 130:
            with pytest.raises(ValueError, match="too small"):  # explicit ncnn: an honest refusal
                up.plan(side, side, precision)
            continue
        plan = up.plan(side, side, precision)
        per_pixel = spec.ncnn_bytes_per_pixel if used == "ncnn" else spec.bytes_per_pixel
        if precision != "fp32":
            per_pixel /= 2
        tile = plan.tile or side
        assert tile * tile * (per_pixel + 16 * 12) <= budget, (side, used, plan)
    if backend == "auto":
        assert up.backend(100, 100, "fp32") == "ncnn" and up.backend(600, 600, "fp32") == "torch"


_PEAK_SCRIPT = """
import resource, sys
import numpy as np
from superres.infer import Upscaler
from superres.io import read_image, to_integer
img, info = read_image(sys.argv[1])
img = to_integer(img, info.bit_depth)
up = Upscaler("realesrgan-x4plus-anime", budget=int(sys.argv[2]))  # auto: fp32 for 16-bit images
up.upscale_array(img[:8, :8])  # loads what the run needs (the network on each backend)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
up.upscale_array(img)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.slow
def test_fp32_on_the_ncnn_path_honours_the_tile_budget(tmp_path, photos):
    """A 16-bit photo (fp32 under auto, where ncnn is the default backend): the peak RSS growth of
    the upscale stays near the budget. It was the whole image at ncnn's ~64 KB per pixel (2.4 GB here)."""
    import subprocess
    import sys

    src = tmp_path / "crop16.png"
    write_image(src, np.rint(photos["astronaut"][100:300, 150:350, :3] * 65535).astype(np.uint16))
    budget = 256 << 20
    result = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(src), str(budget)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    growth_mib = float(result.stdout.split()[-1])
    assert growth_mib < 2 * (budget >> 20), growth_mib


def test_cpu_budget_counts_reclaimable_memory(monkeypatch):
    """A busy machine has little *free* memory (page cache fills it) but plenty *available*."""
    import os
    from pathlib import Path

    import torch

    from superres.infer.image import DEFAULT_BUDGET_CPU, _default_budget

    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo")
    available = next(int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    if available < 8 * DEFAULT_BUDGET_CPU:
        pytest.skip("this machine is short of memory itself")
    real_sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 2000 if name == "SC_AVPHYS_PAGES" else real_sysconf(name))
    assert _default_budget(torch.device("cpu")) == DEFAULT_BUDGET_CPU
