"""What a newcomer met training and loading models (issue 35, items 1 and 2): recipes that name their
datasets and the ``--set`` that points at a missing one, a run resumed from its own saved settings with
``--resume`` alone, and the messages for a missing face model or a well-known release file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from superres.cli import main
from superres.faces import FaceError, load_face_model
from superres.io import write_image
from superres.train import ConfigError, Trainer, load_config, load_run_config, resume_settings
from superres.train.config import RUN_CONFIG, config_differences
from superres.zoo import MODELS, CheckpointError, load_model
from superres.zoo.pretrained import RELEASE_FILES

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, photos) -> Path:
    """Stand-ins for T91, BSD200 and Set5/HR: a few 60x72 crops of the bundled photos each."""
    root = tmp_path_factory.mktemp("datasets")
    for folder, n in (("T91", 4), ("BSD200", 2), ("Set5/HR", 1)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            img = photos["chelsea" if i % 2 else "astronaut"]
            write_image(root / folder / f"im{i}.png", img[20 * i:20 * i + 60, 30 * i:30 * i + 72])
    return root


def error(kind: type[Exception], call, *args) -> str:
    """The message of the ``kind`` error that ``call(*args)`` raises."""
    with pytest.raises(kind) as e:
        call(*args)
    return str(e.value)


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["iter"]: r["l_pix"] for r in records if "l_pix" in r}


def forget_after(run: Path, iteration: int) -> None:
    """The run folder as a process killed (SIGKILL, a power cut) after ``iteration``'s checkpoint leaves it."""
    for ckpt in (run / "checkpoints").iterdir():
        if int(ckpt.stem.split("_")[1]) > iteration:
            ckpt.unlink()
    (run / "model.safetensors").unlink()


# Small enough to train in a second: 24-px HR patches, 4 iterations, a checkpoint every 2.
TINY = ["data.patch_size=24", "data.batch_size=4", "train.iterations=4", "checkpoint.every=2", "log.every=1",
        "log.val_every=2", "log.tensorboard=false", "train.scheduler.periods=[4]"]


@pytest.fixture
def no_network_checks(monkeypatch):
    """Configs read without building their networks on the meta device (test_train checks that): these
    tests are about data folders and saved settings, and the recipes' large networks take seconds."""
    import superres.train.config as config

    monkeypatch.setattr(config, "_check_models", lambda *_: None)


# --- item 1: recipes name their datasets ---------------------------------------------------------------

def test_every_recipe_names_its_datasets_and_the_set_that_points_at_them(no_network_checks):
    for path in RECIPES:
        config = load_config(path, check_paths=False)
        assert config.data.dataset, f"{path.name}: data.dataset is empty"
        assert all(v.dataset for v in config.val), f"{path.name}: a validation set without its dataset"
        head = path.read_text().split("\nname:")[0]
        assert "# Data" in head and "--set" in head, f"{path.name}: its top comment does not say where its data are"


def test_a_fresh_clone_says_which_dataset_is_missing_and_which_set_to_give(tmp_path, no_network_checks):
    """On a clone without this repository's development data, every recipe stops at its first data folder
    with the dataset's name and the --set option to give."""
    clone = tmp_path / "clone" / "configs"
    shutil.copytree(CONFIGS, clone)
    for path in sorted(clone.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        with pytest.raises(ConfigError) as e:
            load_config(path)
        message, data = str(e.value), load_config(path, check_paths=False).data
        assert "data.hr[0]: no such folder" in message and data.dataset in message, message
        setting = "data.hr.0" if len(data.hr) > 1 else "data.hr"
        assert f"--set {setting}=PATH" in message, message
    message = error(ConfigError, load_config, clone / "fsrcnn_x3_t91.yaml", [f"data.hr={tmp_path}"])
    assert "val[0].hr: no such folder" in message and "--set val.0.hr=PATH" in message and "BSD200" in message


def test_a_missing_folder_of_a_config_without_datasets_still_says_the_set(tmp_path, datasets):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "c", "scale": 2, "model": {"arch": "FSRCNN", "args": {"upscale": 2, "num_channels": 3}},
        "data": {"hr": [str(datasets / "T91"), str(tmp_path / "mine")]}, "train": {"iterations": 1}}))
    message = error(ConfigError, load_config, config)
    assert message.endswith(f"data.hr[1]: no such folder: {tmp_path / 'mine'} (the training images; "
                            "--set data.hr.1=PATH points at your copy)")


# --- item 1: resume from the run's own settings ------------------------------------------------------

def test_a_fresh_clone_trains_a_recipe_and_resumes_it_with_only_resume(tmp_path, datasets):
    """The docs' steps on a clone without the development data: the recipe names the --set options, the run
    trains with them, and after the process dies `superres train --resume RUN_DIR` (from anywhere, no
    CONFIG, no --set) continues from the checkpoint with the run's settings, bit for bit."""
    clone = tmp_path / "clone"
    (clone / "configs").mkdir(parents=True)
    shutil.copy(CONFIGS / "fsrcnn_x3_t91.yaml", clone / "configs")
    recipe = "configs/fsrcnn_x3_t91.yaml"
    run = [sys.executable, "-m", "superres", "train"]
    data = [f"data.hr={datasets / 'T91'}", f"val.0.hr={datasets / 'BSD200'}", f"val.1.hr={datasets / 'Set5/HR'}"]
    sets = [arg for s in data + TINY for arg in ("--set", s)]

    first = subprocess.run([*run, recipe, *sets, "-q"], cwd=clone, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    folder = clone / "runs" / "fsrcnn_x3_t91"
    straight = losses(folder)
    assert sorted(straight) == [1, 2, 3, 4]
    forget_after(folder, 2)

    again = subprocess.run([*run, "--resume", str(folder.relative_to(tmp_path)), "-q"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "warning" not in again.stderr, again.stderr
    resumed = losses(folder)
    assert sorted(resumed) == [1, 2, 3, 4] and resumed == straight
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["iter_000000002.pt", "iter_000000004.pt"]
    assert (folder / "model.safetensors").is_file()
    saved = json.loads((folder / RUN_CONFIG).read_text())
    assert saved["data"]["hr"] == [str(datasets / "T91")] and Path(saved["output"]) == folder.resolve()


def test_config_and_resume_keeps_the_runs_settings_and_names_the_keys_that_differ(tmp_path, datasets, monkeypatch,
                                                                                 capsys):
    """CONFIG --resume without the --set options the run started with: the run's settings are kept and one
    warning names the keys; --set given now applies on top (here: more iterations)."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "scale": 2, "seed": 3,
        "model": {"arch": "FSRCNN", "args": {"upscale": 2, "num_channels": 3, "d": 8, "s": 4, "m": 1}},
        "data": {"hr": "nowhere/T91", "dataset": "T91 (stand-in)"},
        "train": {"iterations": 40, "optimizer": {"lr": 1e-3}},
        "log": {"every": 1, "tensorboard": False}}))
    sets = [arg for s in [f"data.hr={datasets / 'T91'}", *TINY[:-1]] for arg in ("--set", s)]
    assert main(["train", str(config), *sets, "-q"]) == 0
    folder = tmp_path / "runs" / "tiny"
    straight = losses(folder)
    forget_after(folder, 2)
    capsys.readouterr()

    assert main(["train", str(config), "--resume", "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differs from the settings of the run it resumes" in err, err
    keys = err.split(" in ", 1)[1].split(":")[0]
    assert keys == ("data.hr, data.patch_size, data.batch_size, train.iterations, checkpoint.every, "
                    "log.val_every"), err
    assert losses(folder) == straight

    assert main(["train", str(config), "--resume", "-q", "--set", "train.iterations=6"]) == 0
    assert sorted(losses(folder)) == [1, 2, 3, 4, 5, 6]
    assert load_run_config(folder).train.iterations == 6  # what a later --resume continues with


def test_resume_takes_a_run_folder_or_a_checkpoint_and_refuses_what_is_neither(tmp_path, datasets, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ConfigError, match="not a training run"):
        resume_settings(None, [], str(run))
    with pytest.raises(ConfigError, match="no such run folder or checkpoint"):
        resume_settings(None, [], str(tmp_path / "gone"))
    recipe = CONFIGS / "fsrcnn_x3_t91.yaml"
    with pytest.raises(ConfigError, match=f"not a config: superres train {recipe} --resume"):
        resume_settings(None, [], str(recipe))
    with pytest.raises(ConfigError, match="which run"):
        resume_settings(None, [], "auto")
    assert main(["train", "-q"]) == 1


def test_every_recipe_resumes_from_its_saved_settings(tmp_path, no_network_checks):
    """What a run saves (config.json) reads back as the same settings, for every recipe."""
    for path in RECIPES:
        config = load_config(path, check_paths=False)
        run = tmp_path / path.stem
        run.mkdir()
        (run / RUN_CONFIG).write_text(config.model_dump_json(indent=2))
        again = load_run_config(run, check_paths=False)
        assert config_differences(config, again) == [] and again.output_dir == run, path.name


def test_the_run_config_is_written_atomically(tmp_path, datasets, monkeypatch):
    import superres.train.trainer as trainer

    written = []

    def spy(path, data):
        written.append(Path(path).name)
        return atomic_write(path, data)

    atomic_write = trainer.atomic_write
    monkeypatch.setattr(trainer, "atomic_write", spy)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "c", "scale": 2, "output": str(tmp_path / "run"),
        "model": {"arch": "FSRCNN", "args": {"upscale": 2, "num_channels": 3, "d": 8, "s": 4, "m": 1}},
        "data": {"hr": str(datasets / "T91"), "patch_size": 24, "batch_size": 2},
        "train": {"iterations": 1}, "log": {"tensorboard": False}}))
    Trainer(load_config(config), quiet=True).fit()
    assert RUN_CONFIG in written
    assert load_run_config(tmp_path / "run").output_dir == tmp_path / "run"


# --- item 2: missing face models and release files ---------------------------------------------------------

@pytest.mark.parametrize("name", ["GFPGANv1.4.pth", "my_faces.pth"])
def test_a_missing_face_model_says_face_weights_are_given_as_a_path(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    message = error(FaceError, load_face_model, name)
    assert message.startswith(f"{name}: no such file; face restoration weights ship on no package registry")
    for works in ("GFPGANv1.3.pth", "GFPGANv1.4.pth", "GFPGANv1.pth", "RestoreFormer.pth", "codeformer.pth"):
        assert works in message
    assert "named models" not in message and "realcugan" not in message


def test_the_cli_says_so_in_one_line(tmp_path, monkeypatch, capsys, photos):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "in.png", photos["astronaut"][:64, :64])
    assert main(["upscale", "in.png", "-o", "out.png", "-m", "bicubic", "--face-model", "GFPGANv1.4.pth"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ship on no package registry" in err and "named models" not in err, err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(("file", "name", "origin"), [
    ("RealESRGAN_x4plus.pth", "realesrgan-x4plus", "Real-ESRGAN's release file"),
    ("RealESRGAN_x4plus_anime_6B.pth", "realesrgan-x4plus-anime", "Real-ESRGAN's release file"),
    ("up2x-latest-no-denoise.pth", "realcugan-2x-no-denoise", "Real-CUGAN's release file"),
    ("pro-denoise3x-up3x.pth", "realcugan-pro-3x-denoise3x", "Real-CUGAN's release file"),
    ("BasicVSR_REDS4-543c8261.pth", "basicvsr-reds4", "BasicSR's release file"),
    ("DAT_light_x4.pth", "dat-light-x4", "DAT's release file"),
])
def test_a_missing_release_file_points_at_the_named_model(tmp_path, monkeypatch, file, name, origin):
    monkeypatch.chdir(tmp_path)
    message = error(CheckpointError, load_model, file)
    assert message.startswith(f"{file}: no such file; it is {origin}"), message
    assert f"the named model {name} is the same network, offline: -m {name}" in message
    assert "named models:" not in message


def test_a_missing_face_checkpoint_given_as_a_model_says_it_is_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = error(CheckpointError, load_model, "codeformer.pth")
    assert "a face restoration checkpoint (CodeFormer)" in message and "ship on no package registry" in message


def test_the_release_table_names_shipped_models_only():
    assert set(v[0] for v in RELEASE_FILES.values()) <= set(MODELS)
    assert len({v[0] for v in RELEASE_FILES.values()}) == len(RELEASE_FILES)
