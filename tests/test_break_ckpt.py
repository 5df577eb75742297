"""Issue 34's faults of checkpoints, exports and training configs: outputs written over their inputs,
models built from untrusted metadata, NaN exports, stale checkpoint temporaries, data that --check
missed, and tracebacks or multi-line messages where one line belongs. CLI behaviour as a process reports it
(conftest.run_main: exit code, stdout, stderr), in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_main
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from superres.cli import main
from superres.config import ConfigError, read_yaml
from superres.errors import SuperresError
from superres.io import write_image
from superres.zoo import CheckpointError, create_model, load_model, save_model


def cli(*args) -> subprocess.CompletedProcess:
    """``superres ARGS``, in this process (see conftest.run_main): the same exit code, stdout and stderr."""
    return run_main(*args)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The command failed with exit code 1 and said why in exactly one line."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superres: error: "), result.stderr
    return lines[0]


def small_net(seed: int):
    torch.manual_seed(seed)
    return create_model("SRVGGNetCompact", num_feat=8, num_conv=2, upscale=2)


@pytest.fixture
def two_models(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(small_net(0), a)
    save_model(small_net(1), b)
    return a, b


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


# --- item 3: a command never writes over its own input, nor over an existing file unasked ---------------

def test_interpolate_refuses_to_write_over_an_input(two_models, tmp_path, capsys):
    a, b = two_models
    before = a.read_bytes(), b.read_bytes()
    line = one_error_line(cli("interpolate", a, b, "--alpha", ".5", "-o", a))
    assert str(a) in line and "input" in line
    # the same file under another name: a hard link, a symbolic link, a relative spelling
    os.link(b, tmp_path / "hard.safetensors")
    (tmp_path / "soft.safetensors").symlink_to(a)
    (tmp_path / "sub").mkdir()
    for out in (tmp_path / "hard.safetensors", tmp_path / "soft.safetensors", tmp_path / "sub/../a.safetensors"):
        assert main(["interpolate", str(a), str(b), "--alpha", ".5", "-o", str(out), "--overwrite"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "input" in err
    assert (a.read_bytes(), b.read_bytes()) == before
    # an unrelated file that exists: replaced only with --overwrite, as `superres video` does
    out = tmp_path / "c.safetensors"
    out.write_bytes(b"precious")
    assert main(["interpolate", str(a), str(b), "--alpha", ".5", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and out.read_bytes() == b"precious"
    assert main(["interpolate", str(a), str(b), "--alpha", ".5", "-o", str(out), "--overwrite"]) == 0
    assert load_model(out).arch == "SRVGGNetCompact" and not temporaries(tmp_path)


def test_export_refuses_to_write_over_its_input(two_models, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    a, _ = two_models
    before = a.read_bytes()
    line = one_error_line(cli("export", a, "-o", a))
    assert str(a) in line and "input" in line and a.read_bytes() == before
    out = tmp_path / "a.onnx"
    out.write_bytes(b"precious")
    assert main(["export", str(a), "-o", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert main(["export", str(a), "-o", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:8] != b"precious" and not temporaries(tmp_path)


# --- item 17: interpolate writes safetensors, so it takes only a .safetensors name ----------------------

def test_interpolate_refuses_an_output_name_it_would_not_reload(two_models, tmp_path):
    a, b = two_models
    line = one_error_line(cli("interpolate", a, b, "--alpha", ".5", "-o", tmp_path / "x.pth"))
    assert "x.pth" in line and ".safetensors" in line
    assert not (tmp_path / "x.pth").exists() and not temporaries(tmp_path)
    with pytest.raises(ValueError, match=r"x\.pth.*\.safetensors"):
        save_model(small_net(0), tmp_path / "x.pth")


# --- item 12: metadata is checked against the file's tensors before any memory is spent ------------------

def _with_metadata(src: Path, dst: Path, **changes) -> Path:
    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
    metadata.update(changes)
    save_file(load_file(src), dst, metadata=metadata)
    return dst


def _kwargs(src: Path, **changes) -> str:
    with safe_open(str(src), framework="pt") as f:
        return json.dumps({**json.loads(f.metadata()["superres_kwargs"]), **changes})


@pytest.mark.parametrize("metadata, message", [
    ({"num_feat": 100000}, r"shapes differ"),  # 360 GB if it were built
    ({"num_feat": 4096}, r"shapes differ"),  # 600 MB, 6 s if it were built
    ({"bogus": 1}, r"superres_kwargs.*bogus"),
    ({"num_feat": "8"}, r"SRVGGNetCompact cannot be built from its metadata \(superres_kwargs\): TypeError"),
    # millions of modules if it were built
    ({"num_conv": 10 ** 7}, r"SRVGGNetCompact from its metadata \(superres_kwargs\) would have far more parts"),
    ("[1, 2]", r"superres_kwargs.*not a JSON object"),
    ("{not json", r"superres_kwargs.*not JSON"),
    ({"superres_arch": "NoSuchNet"}, r"NoSuchNet"),
], ids=["huge-width", "wide", "unknown-argument", "string-width", "deep", "list", "not-json", "unknown-arch"])
def test_untrusted_metadata_is_one_line_naming_the_file(two_models, tmp_path, metadata, message):
    a, _ = two_models
    if isinstance(metadata, str):
        changes = {"superres_kwargs": metadata}
    elif "superres_arch" in metadata:
        changes = metadata
    else:
        changes = {"superres_kwargs": _kwargs(a, **metadata)}
    bad = _with_metadata(a, tmp_path / "bad.safetensors", **changes)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=message) as e:
        load_model(bad)
    assert time.perf_counter() - start < 5
    assert str(e.value).startswith(str(bad)) and "\n" not in str(e.value)


def test_a_wide_metadata_model_is_refused_without_allocating_it(two_models, tmp_path):
    """num_feat: 2048 in a file of 8 features: 300 MB of weights that the old loader built and initialised."""
    a, _ = two_models
    bad = _with_metadata(a, tmp_path / "wide.safetensors", superres_kwargs=_kwargs(a, num_feat=2048))
    code = ("import resource, sys\nfrom superres.zoo import CheckpointError, load_model\n"
            f"load_model({str(a)!r})\npeak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try:\n    load_model({str(bad)!r})\nexcept CheckpointError as e:\n    print(e, file=sys.stderr)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "shapes differ" in result.stderr, result.stderr
    assert int(result.stdout) < 50_000  # KB: nothing near the 300 MB


# --- item 13: an export that computes NaN is refused; NaN never compares equal -------------------------

def test_export_refuses_non_finite_weights_and_writes_nothing(two_models, tmp_path):
    pytest.importorskip("onnxruntime")
    a, _ = two_models
    nan = tmp_path / "nan.safetensors"
    with safe_open(str(a), framework="pt") as f:
        metadata = f.metadata()
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(a).items()}, nan, metadata=metadata)
    line = one_error_line(cli("export", nan, "-o", tmp_path / "m.onnx"))
    assert "NaN" in line and "weight" in line
    assert not (tmp_path / "m.onnx").exists() and not temporaries(tmp_path)


def test_onnx_nan_where_pytorch_is_finite_is_a_mismatch(tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from superres.zoo.export import ExportError, export_onnx

    real = ort.InferenceSession

    class NaNSession:
        def __init__(self, *args, **kwargs):
            self.session = real(*args, **kwargs)

        def run(self, names, feeds):
            out = self.session.run(names, feeds)
            out[0][..., 0, 0] = np.nan
            return out

    monkeypatch.setattr(ort, "InferenceSession", NaNSession)
    with pytest.raises(ExportError, match=r"m\.onnx: ONNX Runtime gives NaN or infinity at \d+ output values"):
        export_onnx(small_net(0), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists() and not temporaries(tmp_path)


# --- training: data, configs, checkpoints ---------------------------------------------------------------

@pytest.fixture
def train_data(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for folder, size, count in (("big", 32, 3), ("tiny", 1, 3), ("mixed", 8, 2)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            write_image(tmp_path / folder / f"{i}.png", rng.random((size, size, 3)).astype(np.float32))
    write_image(tmp_path / "mixed" / "large.png", rng.random((40, 30, 3)).astype(np.float32))
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("not an image")
    return tmp_path


def train_config(folder: Path, hr, **changes) -> Path:
    config = {"name": "tiny", "scale": 2, "output": str(folder / "run"),
              "model": {"arch": "FSRCNN", "args": {"upscale": 2, "num_channels": 3, "d": 8, "s": 4, "m": 1}},
              "data": {"hr": hr, "patch_size": 16, "batch_size": 2},
              "train": {"iterations": 2}, "checkpoint": {"every": 1},
              "log": {"every": 1, "tensorboard": False}}
    config.update(changes)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("hr, message", [
    ("empty", r"data\.hr\[0\]: no images in .*empty"),
    ("text", r"data\.hr\[0\]: no images in .*text"),
    ("tiny", r"data\.hr\[0\]: .*smaller than the 16-pixel HR patch .*1x1"),
    ([], r"data\.hr: no folders"),
])
def test_train_check_finds_data_that_cannot_train(train_data, hr, message):
    from superres.train import load_config
    from superres.train.config import check_data

    path = train_config(train_data, [str(train_data / h) for h in hr] if isinstance(hr, list) else
                        str(train_data / hr))
    with pytest.raises(ConfigError, match=message) as e:
        check_data(load_config(path), path)  # what `superres train` and `train --check` do
    assert "\n" not in str(e.value)
    path = train_config(train_data, [str(train_data / "big"), str(train_data / "mixed")])  # some images fit
    check_data(load_config(path), path)


def test_train_check_command_refuses_images_smaller_than_the_patch(train_data):
    line = one_error_line(cli("train", train_config(train_data, str(train_data / "tiny")), "--check"))
    assert "data.hr[0]" in line and "patch" in line


def test_a_run_removes_the_temporaries_of_killed_checkpoint_saves(train_data):
    """SIGKILL during a checkpoint save leaves ``.iter_*.pt.PID.x.tmp``: the next start (or resume)
    removes those of dead processes, and only those."""
    from superres.train import Trainer, load_config, train

    config = load_config(train_config(train_data, str(train_data / "big")))
    train(config, quiet=True)
    ckpts = Path(config.output) / "checkpoints"
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\nfrom pathlib import Path\nfrom superres.io.files import temp_beside\n"
        "for name in sys.argv[1:]:\n    fd, tmp = temp_beside(Path(name))\n    os.write(fd, b'x' * 4096)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"), str(ckpts / "iter_000000003.pt"),
        str(Path(config.output) / "model.safetensors")])
    assert killed.returncode == -signal.SIGKILL
    dead = temporaries(Path(config.output))
    assert len(dead) == 2
    alive = subprocess.Popen(["sleep", "60"])
    try:
        kept = [ckpts / f".iter_000000004.pt.{alive.pid}.abcdefgh.tmp",  # a process still writing
                ckpts / f".iter_000000005.pt.{os.getpid()}.x.tmp", ckpts / "notes.tmp", ckpts / ".other.99999999.x.tmp"]
        for path in kept:
            path.write_bytes(b"")
        Trainer(config, resume="auto", quiet=True)
        assert sorted(temporaries(Path(config.output))) == sorted(p for p in kept if p.name.startswith("."))
        assert (ckpts / "notes.tmp").exists()
    finally:
        alive.kill()
        alive.wait()


def test_a_malicious_vgg_weights_file_is_refused_in_one_line(tmp_path):
    from superres.losses import PerceptualLoss

    class Code:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    torch.save({"features.0.weight": torch.zeros(1), "x": Code()}, tmp_path / "vgg.pth")
    with pytest.raises(SuperresError, match=r"vgg\.pth: refused") as e:
        PerceptualLoss({"conv5_4": 1.0}, weights=tmp_path / "vgg.pth")
    assert "\n" not in str(e.value) and not (tmp_path / "ran").exists()
    save_model(small_net(0), tmp_path / "sr.safetensors")  # a checkpoint, but not of a VGG19
    torch.save(load_file(tmp_path / "sr.safetensors"), tmp_path / "sr.pth")
    with pytest.raises(SuperresError, match=r"sr\.pth: not torchvision's VGG19") as e:
        PerceptualLoss({"conv5_4": 1.0}, weights=tmp_path / "sr.pth")
    assert "\n" not in str(e.value)


def test_init_of_a_submodule_that_does_not_exist_is_one_line(train_data, two_models):
    from superres.train import Trainer, load_config

    a, _ = two_models
    path = train_config(train_data, str(train_data / "big"))
    with pytest.raises(ConfigError, match=r"model\.init\.body: FSRCNN has no submodule 'body'") as e:
        load_config(path, [f"model.init.body={a}"])
    assert "\n" not in str(e.value)
    config = load_config(path)
    config.model.init = {"body": str(a)}  # as an API caller may set it, after the checks
    with pytest.raises(SuperresError, match=r"model\.init\.body: FSRCNN has no submodule 'body'"):
        Trainer(config, quiet=True)
    with pytest.raises(ConfigError, match=r"model\.args: FSRCNN: .*unexpected keyword argument 'bogus'"):
        load_config(path, ["model.args.bogus=1"])


def test_invalid_yaml_is_one_line_with_its_place(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\nscale: [1\nmodel: {}\n")
    line = one_error_line(cli("train", tmp_path / "bad.yaml"))
    assert f"{tmp_path / 'bad.yaml'}:3:6: not valid YAML: expected ',' or ']', but got ':'" in line
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=r"binary\.yaml: not a text file") as e:
        read_yaml(tmp_path / "binary.yaml")
    assert "\n" not in str(e.value)
    (tmp_path / "nul.yaml").write_text("name: x\0\n")
    with pytest.raises(ConfigError, match=r"nul\.yaml:1:8: not valid YAML") as e:
        read_yaml(tmp_path / "nul.yaml")
    assert "\n" not in str(e.value)


def test_resume_from_a_refused_checkpoint_is_one_line(train_data):
    class Code:
        def __reduce__(self):
            return os.system, (f"touch {train_data / 'ran'}",)

    torch.save({"iteration": 1, "net_g": {}, "x": Code()}, train_data / "evil.pt")
    line = one_error_line(cli("train", train_config(train_data, str(train_data / "big")), "-q",
                              "--resume", train_data / "evil.pt"))
    assert "evil.pt" in line and "refused" in line and "weights_only" not in line
    assert not (train_data / "ran").exists()
