"""``superres interpolate --sweep``: the perception-distortion table and plot over network interpolation."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch

import superres
from superres.cli import main
from superres.errors import SuperresError
from superres.io import write_image
from superres.metrics.evaluate import evaluate
from superres.metrics.sweep import interpolation_sweep
from superres.runner import Runner


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """A = nearest-neighbour x4 (SRVGGNetCompact's skip, its last conv zero), B = A plus a random residual."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    b = superres.create_model("SRVGGNetCompact", num_feat=8, num_conv=1, upscale=4)
    a = superres.create_model("SRVGGNetCompact", num_feat=8, num_conv=1, upscale=4)
    a.module.load_state_dict(b.module.state_dict())
    with torch.no_grad():
        a.module.body[-1].weight.zero_()
        a.module.body[-1].bias.zero_()
    superres.save_model(a, folder / "psnr.safetensors")
    superres.save_model(b, folder / "gan.safetensors")
    return folder / "psnr.safetensors", folder / "gan.safetensors"


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory, photos):
    """Two real 112x208 crops: after the x4 border crop NIQE still has two 96x96 blocks."""
    folder = tmp_path_factory.mktemp("hr")
    write_image(folder / "astronaut.png", photos["astronaut"][100:212, 150:358])
    write_image(folder / "chelsea.png", photos["chelsea"][60:172, 120:328])
    return folder


def test_sweep_scores_each_blend_like_evaluate(two_models, hr_folder):
    rows = interpolation_sweep(*two_models, hr_folder, [0.0, 0.5, 1.0])
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    from superres.data import eval_pairs

    pairs = eval_pairs(hr_folder, 4)
    for row, model in ((rows[0], two_models[0]), (rows[-1], two_models[1])):
        records = evaluate(Runner(superres.load_model(model), superres.RunOptions(precision="fp32", backend="torch",
                                                                                  tile=0)), pairs)
        assert row["psnr"] == pytest.approx(sum(r["psnr"] for r in records) / 2, abs=1e-9)
    assert rows[0]["psnr"] > rows[-1]["psnr"]  # the random residual costs fidelity
    assert all(r["niqe"] > 0 and r["brisque"] == r["brisque"] for r in rows)


def test_interpolate_sweep_command_writes_table_and_plot(two_models, hr_folder, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    assert main(["interpolate", *map(str, two_models), "--sweep", str(hr_folder), "--alphas", "0:1:0.5",
                 "-o", str(out)]) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(r["alpha"]) for r in rows] == [0.0, 0.5, 1.0]
    assert set(rows[0]) == {"name", "alpha", "psnr", "ssim", "niqe", "brisque"}
    assert len(json.loads((out / "sweep.json").read_text())) == 3
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["interpolate", *map(str, two_models), "-o", str(out)]) == 1  # neither --alpha nor --sweep
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from superres.metrics.sweep import plot_sweep

    with pytest.raises(SuperresError, match="pip install matplotlib"):
        plot_sweep([], out / "x.png")
    with pytest.raises(SystemExit):
        main(["interpolate", *map(str, two_models), "--sweep", str(hr_folder), "--alphas", "0:2:1", "-o", str(out)])
