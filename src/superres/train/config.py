"""Training configs: YAML files checked against typed classes before anything runs.

A config may name a ``base`` file (relative to itself) whose values it overrides, key by key;
``--set a.b.c=value`` overrides on the command line (values parsed as YAML). Unknown keys,
wrong types, network arguments that do not build the network (checked on the meta device),
``init`` entries that name no submodule, and data folders that are missing or hold no images
fail at load time with the key's dotted path, not at iteration 10,000; :func:`check_data` (what
``superres train`` runs, ``--check`` included) also refuses training folders whose images are all
smaller than the HR patch. ``json_schema()`` gives the schema for editors (yaml-language-server).

Relative paths of data folders (``data.hr``, ``data.lr``, ``val[i].hr``, ``val[i].lr``) and of model
files (``pretrained``, ``init``, ``train.perceptual_loss.vgg_weights``) are relative to the folder of
the file that writes them (a ``base`` file's to the base file's), so a config and its data can move
together; ``--set`` values are relative to the working directory, as is ``output`` (where runs go).
Absolute paths and named models (``realesrgan-x4plus``) are kept as they are. A missing data folder
is reported with what it holds (``data.dataset``, ``val[i].dataset``: the recipe's dataset and where
to get it) and the ``--set`` that points at another.

A run saves its resolved settings in its folder (:data:`RUN_CONFIG`); :func:`resume_settings` is what
``--resume`` continues with: those settings, ``--set`` values on top.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import Field, model_validator

from superres.config import ConfigError, Strict, read_yaml, validate, yaml_problem
from superres.data.degradations import RealDegradation


class ModelConfig(Strict):
    """A network from ``superres.archs`` and its constructor arguments."""

    arch: str
    args: dict[str, Any] = Field(default_factory=dict)
    pretrained: str | None = None  # a checkpoint load_model reads (e.g. the PSNR stage for GAN)
    init: dict[str, str] = Field(default_factory=dict, description="submodule -> checkpoint loaded into it "
                                 "(strict keys) before training, e.g. BasicVSR's pretrained SPyNet: "
                                 "{spynet: spynet_sintel_final-3d2a1287.pth}")

    @model_validator(mode="after")
    def _known(self) -> ModelConfig:
        from superres.archs import ARCHITECTURES

        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {self.arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        return self


class TrainData(Strict):
    """HR images (LR made on the fly by ``degradation``) or HR/LR pairs matched by file name."""

    hr: list[str]
    lr: list[str] | None = None
    dataset: str = Field("", description="what the folders hold and where to get them (said when one is missing), "
                         "e.g. 'T91: the 91 images of Yang et al., TIP 2010, distributed with SRCNN's code'")
    degradation: Literal["bicubic", "bd"] = "bicubic"
    patch_size: int = Field(96, gt=0, description="HR patch side; the LR patch is patch_size / scale")
    batch_size: int = Field(16, gt=0, description="global batch, split over DDP processes")
    y_channel: bool = False
    flip: bool = Field(True, description="random horizontal flips (BasicSR's use_hflip)")
    rot90: bool = Field(True, description="random vertical flips and transposes (BasicSR's use_rot)")
    hr_scales: list[float] = Field([1.0], description="extra down-scaled copies of each HR image "
                                   "(FSRCNN: 1.0, 0.9, 0.8, 0.7, 0.6)")
    cache: bool = True
    workers: int = Field(0, ge=0)
    real: RealDegradation | None = Field(None, description="Real-ESRGAN's degradations made on the training "
                                         "device from HR patches ({} for the paper's settings)")
    video: VideoData | None = Field(None, description="train a video network on clips")

    @model_validator(mode="after")
    def _real_needs_hr_only(self) -> TrainData:
        if self.real is not None and (self.lr or self.y_channel):
            raise ValueError("real degradations make the LR from RGB HR patches: no lr folder, no y_channel")
        if self.video is not None and (self.real is not None or self.y_channel or self.hr_scales != [1.0]):
            raise ValueError("video clips are RGB with BI/BD degradations: no real, y_channel or hr_scales")
        if self.video is not None and self.video.motion is not None and self.lr:
            raise ValueError("synthetic clips (video.motion) make their own LR: no lr folder")
        return self

    @model_validator(mode="before")
    @classmethod
    def _listify(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: ([v] if k in ("hr", "lr") and isinstance(v, str) else v) for k, v in data.items()}
        return data


class CameraMotion(Strict):
    """Synthetic clips from still images: a camera moving at a constant random pan, zoom and rotation."""

    max_shift: float = Field(2.0, ge=0, description="pixels per frame (HR), per axis")
    max_zoom: float = Field(0.005, ge=0, description="relative scale change per frame")
    max_rotation: float = Field(0.3, ge=0, description="degrees per frame")


class VideoData(Strict):
    """Clips for video networks: ``hr`` holds folders of frames (REDS, Vimeo-90K, Vid4, ...), or still
    images when ``motion`` is set."""

    frames: int = Field(5, ge=1, description="window (EDVR, TAN) or clip (BasicVSR, VSR-Transformer) length")
    mode: Literal["window", "clip"] = Field("window", description="window: the centre frame is the target; "
                                            "clip: every frame is")
    reverse: bool = Field(True, description="reverse the time order of half the samples")
    include: list[str] | None = Field(None, description="only these clips (paths relative to hr)")
    exclude: list[str] = Field(default_factory=list, description="never these clips (REDS4: 000, 011, 015, 020)")
    motion: CameraMotion | None = None
    single_frame: bool = Field(False, description="the single-frame ablation of a multi-frame network, on the same "
                               "clips: in window mode every input frame is a copy of the centre one; in clip mode "
                               "every frame is fed on its own (nothing propagates between frames)")


class ValData(Strict):
    """A validation set: scored by Y-PSNR/SSIM with crop = scale unless told otherwise."""

    name: str
    hr: str
    lr: str | None = None
    dataset: str = Field("", description="what the folders hold and where to get them (said when one is missing)")
    degradation: Literal["bicubic", "bd"] = "bicubic"
    y_channel: bool = True
    crop_border: int | None = Field(None, description="default: the scale (images), 0 (clips)")
    max_images: int | None = Field(None, gt=0)
    clips: bool = Field(False, description="hr holds clips (folders of frames), scored on every frame")
    single_frame: bool = Field(False, description="clips: feed the network copies of one frame (the ablation)")
    include: list[str] | None = Field(None, description="clips: only these (REDS4: 000, 011, 015, 020)")

    @model_validator(mode="after")
    def _clip_options(self) -> ValData:
        if (self.include is not None or self.single_frame) and not self.clips:
            raise ValueError("include and single_frame are options of clip sets (clips: true)")
        return self


class Optimizer(Strict):
    type: Literal["Adam", "AdamW", "SGD"] = "Adam"
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_multipliers: dict[str, float] = Field(
        default_factory=dict, description="parameter-name prefix -> lr factor (SRCNN's last layer: 0.1)")


class MultiStep(Strict):
    type: Literal["MultiStep"]
    milestones: list[int]
    gamma: float = 0.5


class CosineAnnealingRestart(Strict):
    type: Literal["CosineAnnealingRestart"]
    periods: list[int]
    restart_weights: list[float] | None = None
    eta_min: float = 1e-7

    @model_validator(mode="after")
    def _lengths(self) -> CosineAnnealingRestart:
        if self.restart_weights is not None and len(self.restart_weights) != len(self.periods):
            raise ValueError("restart_weights and periods must have the same length")
        return self


class Constant(Strict):
    type: Literal["Constant"]


Scheduler = Annotated[MultiStep | CosineAnnealingRestart | Constant, Field(discriminator="type")]


class PixelLoss(Strict):
    type: Literal["L1", "MSE", "Charbonnier"] = "L1"
    weight: float = 1.0
    eps: float = 1e-12  # Charbonnier only


class PerceptualLoss(Strict):
    """VGG19 features before activation (ESRGAN), compared with L1, weighted per layer."""

    weight: float = 1.0
    layer_weights: dict[str, float] = Field(default_factory=lambda: {
        "conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0})
    vgg_weights: str | None = Field(None, description="default (or 'caffe'): the original (Caffe) VGG19, "
                                    "offline, features / 57.63; a torchvision vgg19-dcbb9e9d.pth file, or "
                                    "'torchvision' for that file in the torch hub cache; 'random' for tests")
    use_input_norm: bool = True
    criterion: Literal["L1", "MSE"] = "L1"


class GanConfig(Strict):
    """Adversarial training: SRGAN (vanilla) or ESRGAN (relativistic average)."""

    discriminator: ModelConfig
    optimizer: Optimizer = Field(default_factory=Optimizer)
    scheduler: Scheduler = Field(default_factory=lambda: Constant(type="Constant"))
    gan_type: Literal["vanilla", "lsgan", "hinge", "wgan_softplus"] = "vanilla"
    relativistic: bool = False
    weight: float = 5e-3
    d_steps: int = Field(1, ge=1, description="generator update every d_steps iterations")
    d_init_iters: int = Field(0, ge=0, description="train only D for this many iterations first")


class TrainConfig(Strict):
    iterations: int = Field(gt=0)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    scheduler: Scheduler = Field(default_factory=lambda: Constant(type="Constant"))
    warmup_iters: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    pixel_loss: PixelLoss | None = Field(default_factory=PixelLoss)
    perceptual_loss: PerceptualLoss | None = None
    gan: GanConfig | None = None
    freeze: dict[str, int] = Field(default_factory=dict, description="parameter-name prefix -> iterations it "
                                   "stays fixed at the start (BasicVSR: spynet: 5000)")
    branches_first: int = Field(0, ge=0, description="iterations that train each inference branch of the "
                                "temporal adaptive network on its own (the pixel loss on every branch's "
                                "estimate) before the whole network is trained jointly, as the paper does")
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False

    @model_validator(mode="after")
    def _branch_stage(self) -> TrainConfig:
        if self.branches_first and (self.pixel_loss is None or self.perceptual_loss or self.gan):
            raise ValueError("train.branches_first trains the branches with the pixel loss alone: it needs "
                             "pixel_loss and no perceptual_loss or gan")
        return self


class Checkpoints(Strict):
    every: int = Field(1000, gt=0)
    keep_last: int = Field(3, ge=1)


class Logging(Strict):
    every: int = Field(100, gt=0)
    val_every: int = Field(1000, gt=0)
    tensorboard: bool = True
    val_samples: int = Field(2, ge=0, description="validation images written to TensorBoard")


class Config(Strict):
    """One training run. ``output`` holds checkpoints, logs and the exported model."""

    name: str
    scale: int = Field(ge=1, le=8)
    seed: int = 0
    device: str = "auto"
    output: str = "runs/${name}"
    source: str = Field("", description="the paper (and table) whose setting this recipe follows")
    model: ModelConfig
    data: TrainData
    val: list[ValData] = Field(default_factory=list)
    train: TrainConfig
    checkpoint: Checkpoints = Field(default_factory=Checkpoints)
    log: Logging = Field(default_factory=Logging)

    @property
    def output_dir(self) -> Path:
        return Path(self.output.replace("${name}", self.name))


def _apply_override(data: dict, assignment: str, path: Path) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"{path}: --set takes key=value, got {assignment!r}")
    node: Any = data
    *parents, leaf = key.split(".")
    try:
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: --set {key}: the value is not valid YAML: {yaml_problem(e)}") from None
        if isinstance(node, list):
            node[int(leaf)] = value
        elif isinstance(node, dict):
            node[leaf] = value
        else:
            raise TypeError
    except (ValueError, IndexError, TypeError, AttributeError):
        raise ConfigError(f"{path}: --set {key}: no such place in the config") from None


def load_config(path: str | os.PathLike, overrides: list[str] = (), check_paths: bool = True) -> Config:
    """Read, merge and validate a config; every problem is reported with its key path."""
    path = Path(path)
    return _load(read_yaml(path, _rebase), path, overrides, check_paths)


def _load(data: dict, path: Path, overrides: list[str], check_paths: bool) -> Config:
    """``data`` (a file's mapping, its paths made absolute) with ``overrides``, validated and checked."""
    for assignment in overrides:
        _apply_override(data, assignment, path)
    data = _rebase(data, Path.cwd())  # the --set values
    config = validate(Config, data, path)
    _check_schedules(config, path)
    _check_models(config, path)
    if check_paths:
        for folder in _data_folders(config):
            if not Path(folder.path).is_dir():
                raise ConfigError(f"{path}: {folder.key}: no such folder: {folder.path} ({folder.hint})")
        _check_data_folders(config, path)
        for key, m in _models(config):
            if m.pretrained and not _known_model(m.pretrained):
                raise ConfigError(f"{path}: {key}.pretrained: no such file or model name: {m.pretrained} "
                                  f"(--set {key}.pretrained=PATH points at another, =null starts from scratch)")
            for name, file in m.init.items():
                if not _known_model(file):
                    raise ConfigError(f"{path}: {key}.init.{name}: no such file or model name: {file} "
                                      f"(--set {key}.init.{name}=PATH points at your copy)")
    return config


RUN_CONFIG = "config.json"  # a run's settings, saved in its output folder when it starts


def load_run_config(run: str | os.PathLike, overrides: list[str] = (), check_paths: bool = True) -> Config:
    """The settings a run was started with: its ``config.json`` (the recipe with the ``--set`` values it was
    given, paths absolute), ``overrides`` on top. ``output`` is the run folder, wherever it is now."""
    path = Path(run) / RUN_CONFIG
    data = read_yaml(path)  # JSON is YAML
    data["output"] = os.path.abspath(run)
    return _load(data, path, overrides, check_paths)


def resume_settings(config: str | os.PathLike | None, overrides: list[str] = (),
                    resume: str = "auto") -> tuple[Config, Path, str]:
    """What ``superres train [CONFIG] --resume [RUN_DIR | CHECKPOINT]`` continues: the settings, the file
    they were read from (for messages) and the checkpoint to start from (``auto``: the run's latest).

    The run folder is RUN_DIR; else the folder of CHECKPOINT (``RUN/checkpoints/iter_N.pt``) when no
    CONFIG is given; else CONFIG's output folder. The run's own saved settings (:data:`RUN_CONFIG`) are
    used, so a run resumes with ``--resume`` alone; ``overrides`` apply on top of them (what the command
    line asks now). Where CONFIG (with the overrides) differs from them, a warning names the keys and the
    run's values are kept: a recipe edited or read from another folder does not change a run half-way. A
    run folder without saved settings (an older run, or a checkpoint branched into a new folder) takes
    CONFIG."""
    import warnings

    checkpoint, run = "auto", None
    if resume != "auto":
        target = Path(resume)
        if target.is_dir():
            run = target
        elif target.suffix.lower() in (".yaml", ".yml"):
            raise ConfigError(f"--resume {target}: takes a run folder or a checkpoint, not a config: "
                              f"superres train {target} --resume")
        elif target.is_file():
            checkpoint = str(target)
            run = target.parent.parent if config is None else None
        else:
            raise ConfigError(f"--resume {target}: no such run folder or checkpoint")
    elif config is None:
        raise ConfigError("--resume: which run? give its folder (superres train --resume RUN_DIR) or its config "
                          "(superres train CONFIG --resume)")
    recipe = None
    if config is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said below, of the settings that run
            recipe = load_config(config, overrides, check_paths=False)
        run = run if run is not None else recipe.output_dir
    saved = run / RUN_CONFIG
    if not saved.is_file():
        if config is None:
            raise ConfigError(f"{run}: not a training run (no {RUN_CONFIG}); give the config it was started with: "
                              "superres train CONFIG --resume")
        return load_config(config, overrides), Path(config), checkpoint
    settings = load_run_config(run, overrides)
    differ = config_differences(recipe, settings) if recipe is not None else []
    if differ:
        warnings.warn(f"{config} differs from the settings of the run it resumes ({saved}) in {', '.join(differ)}: "
                      "the run's are kept (--set KEY=VALUE changes one)", stacklevel=2)
    return settings, saved, checkpoint


def config_differences(a: Config, b: Config) -> list[str]:
    """The keys, as ``--set`` writes them (``val.0.hr``), whose values differ; ``output`` (where the run
    is) is not compared."""
    def flat(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
        if isinstance(value, dict):
            for key, v in value.items():
                yield from flat(v, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                yield from flat(v, f"{prefix}{i}.")
        else:
            yield prefix[:-1], value

    left, right = dict(flat(a.model_dump(exclude={"output"}))), dict(flat(b.model_dump(exclude={"output"})))
    absent = object()
    return [key for key in dict.fromkeys([*left, *right]) if left.get(key, absent) != right.get(key, absent)]


_VGG_KEYWORDS = {"caffe", "torchvision", "random"}


def _rebase(data: dict, folder: Path) -> dict:
    """``data`` (one file's mapping, or the merged one) with its relative data folders and model files
    made absolute from ``folder``; values of the wrong type are left for validation to report."""
    def path(value: Any, keep: set[str] = frozenset()) -> Any:
        if not isinstance(value, str) or not value or value in keep or os.path.isabs(value):
            return value
        return os.path.normpath(folder / value)

    def paths(value: Any) -> Any:
        return [path(v) for v in value] if isinstance(value, list) else path(value)

    def model(m: Any) -> None:
        if isinstance(m, dict):
            from superres.zoo import MODELS

            if "pretrained" in m:
                m["pretrained"] = path(m["pretrained"], set(MODELS))
            if isinstance(m.get("init"), dict):
                m["init"] = {k: path(v, set(MODELS)) for k, v in m["init"].items()}

    if isinstance(data.get("data"), dict):
        for key in ("hr", "lr"):
            if key in data["data"]:
                data["data"][key] = paths(data["data"][key])
    if isinstance(data.get("val"), list):
        for v in data["val"]:
            for key in ("hr", "lr"):
                if isinstance(v, dict) and key in v:
                    v[key] = path(v[key])
    model(data.get("model"))
    train = data.get("train")
    if isinstance(train, dict):
        if isinstance(train.get("gan"), dict):
            model(train["gan"].get("discriminator"))
        if isinstance(train.get("perceptual_loss"), dict) and "vgg_weights" in train["perceptual_loss"]:
            loss = train["perceptual_loss"]
            loss["vgg_weights"] = path(loss["vgg_weights"], _VGG_KEYWORDS)
    return data


def _check_schedules(config: Config, path: Path) -> None:
    """A cosine schedule longer than the run (``--set train.iterations=1000`` on a recipe whose period
    is 20000) is kept as written, since restarts and periods are deliberate, but said in one warning:
    the learning rate would stop far from its floor."""
    import warnings

    for key, schedule in (("train.scheduler", config.train.scheduler),
                          ("train.gan.scheduler", config.train.gan and config.train.gan.scheduler)):
        if isinstance(schedule, CosineAnnealingRestart) and sum(schedule.periods) > config.train.iterations:
            warnings.warn(f"{path}: {key}: the cosine periods add up to {sum(schedule.periods)} iterations, longer "
                          f"than train.iterations={config.train.iterations}: the learning rate will not anneal to "
                          f"its floor; scale {key}.periods to the run (e.g. --set {key}.periods=[N])", stacklevel=3)


def _models(config: Config) -> list[tuple[str, ModelConfig]]:
    gan = config.train.gan
    return [("model", config.model)] + ([("train.gan.discriminator", gan.discriminator)] if gan else [])


def _check_models(config: Config, path: Path) -> None:
    """Each network's arguments build it, and its ``init`` names its submodules: checked on the meta
    device (no memory, no initialisation), so a typo fails here and not after the data are read."""
    import torch

    from superres.zoo import create_model

    for key, m in _models(config):
        try:
            with torch.device("meta"):
                net = create_model(m.arch, **m.args).module
        except (TypeError, ValueError) as e:  # the constructor's own checks of its arguments
            raise ConfigError(f"{path}: {key}.args: {m.arch}: {str(e).strip().splitlines()[0]}") from None
        for name in m.init:
            problem = missing_submodule(net, name, m.arch)
            if problem:
                raise ConfigError(f"{path}: {key}.init.{name}: {problem}")


def missing_submodule(net, name: str, arch: str) -> str | None:
    """Why ``name`` (dotted; empty: the whole network) is not a submodule of ``net``, or None if it is."""
    if not name:
        return None
    try:
        net.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in net.named_children())
        return f"{arch} has no submodule {name!r} (its submodules: {children})"
    return None


def _check_data_folders(config: Config, path: Path) -> None:
    """Every data folder holds images (clips: folders of frames): the listing only, no file is read."""
    from superres.data.video import clip_folders
    from superres.io import IMAGE_EXTENSIONS, list_images

    if not config.data.hr:
        raise ConfigError(f"{path}: data.hr: no folders given")
    reads = f"it reads {' '.join(sorted(IMAGE_EXTENSIONS))}"
    clips = {f"data.hr[{i}]" for i in range(len(config.data.hr)) if _data_clips(config)}
    clips |= {f"val[{i}].hr" for i, v in enumerate(config.val) if v.clips}
    for folder in _data_folders(config):
        if folder.key.startswith("val[") and folder.key.endswith(".lr"):
            continue  # pairs with val.hr's files by name: what is missing is said when they are read
        if folder.key in clips:
            if not clip_folders(folder.path):
                raise ConfigError(f"{path}: {folder.key}: no clips (folders of frames) in {folder.path} ({reads}; "
                                  f"{folder.hint})")
        elif not list_images(folder.path):
            raise ConfigError(f"{path}: {folder.key}: no images in {folder.path} ({reads}; {folder.hint})")


def _data_clips(config: Config) -> bool:
    """``data.hr`` holds clips (folders of frames), not images."""
    return config.data.video is not None and config.data.video.motion is None


SAMPLE = 16  # images per training folder whose size check_data reads from the header


def check_data(config: Config, path: str | os.PathLike) -> None:
    """Refuse training folders whose images are all smaller than the HR patch (the run would find
    nothing to crop), or hold a file that is not a readable image. Sizes come from the headers of
    :data:`SAMPLE` images spread over each folder (clips: their first frames), so a large dataset costs
    a few reads; the run itself leaves out the images that are too small, with a warning. What
    ``superres train`` checks (``--check`` included) after :func:`load_config`."""
    from superres.data.video import clip_folders
    from superres.io import list_images, probe_image
    from superres.io.image import ImageError

    data, clips = config.data, _data_clips(config)
    patch = data.patch_size / max(data.hr_scales)  # an image this large gives a patch at the largest hr_scale
    for i, folder in enumerate(data.hr):
        key = f"data.hr[{i}]"
        found = clip_folders(folder) if clips else list_images(folder)
        sample = [found[j * len(found) // SAMPLE] for j in range(SAMPLE)] if len(found) > SAMPLE else found
        sizes = []
        for file in (list_images(clip)[0] for clip in sample) if clips else sample:
            try:
                sizes.append((file, probe_image(file, None)[1:]))
            except ImageError as e:
                raise ConfigError(f"{path}: {key}: {e}") from None
        if sizes and all(min(size) < patch for _, size in sizes):
            file, (w, h) = sizes[0]
            every = len(sizes) == len(found)
            if clips:
                what = "the frames of every clip are" if every else f"the frames of all {len(sizes)} clips sampled are"
            else:
                what = "every image is" if every else f"every one of {len(sizes)} images sampled is"
            scaled = f" at hr_scales {max(data.hr_scales):g}" if max(data.hr_scales) != 1 else ""
            raise ConfigError(f"{path}: {key}: {what} smaller than the {data.patch_size}-pixel HR patch "
                              f"(data.patch_size){scaled}, e.g. {file.name} is {w}x{h}")


class _Folder(NamedTuple):
    key: str  # as messages name it: data.hr[0]
    path: str
    hint: str  # what it holds (the recipe's dataset) and the --set that points at another


def _data_folders(config: Config) -> list[_Folder]:
    """The data folders a config reads, each with what a message says when it is missing or empty."""
    def folder(key: str, i: int | None, path: str, setting: str, what: str, dataset: str) -> _Folder:
        about = f"{what}, {dataset}" if dataset else what
        return _Folder(key if i is None else f"{key}[{i}]", path, f"{about}; --set {setting}=PATH points at your copy")

    d, clips = config.data, _data_clips(config)
    kind = "clips (folders of frames)" if clips else "images"
    folders = []
    for side, paths in (("hr", d.hr), ("lr", d.lr or [])):
        what = f"the {side.upper() + ' ' if d.lr else ''}training {kind}"
        for i, path in enumerate(paths):  # data.hr.1 where the recipe lists several (a single one may be a string)
            setting = f"data.{side}" if len(paths) == 1 else f"data.{side}.{i}"
            folders.append(folder(f"data.{side}", i, path, setting, what, d.dataset))
    for i, v in enumerate(config.val):
        for side, path in (("hr", v.hr), ("lr", v.lr)):
            if path:
                what = f"validation set {v.name}{', ' + side.upper() if v.lr else ''}"
                folders.append(folder(f"val[{i}].{side}", None, path, f"val.{i}.{side}", what, v.dataset))
    return folders


def _known_model(name: str) -> bool:
    from superres.zoo import MODELS

    return name in MODELS or Path(name).is_file()


def json_schema() -> dict:
    """The config's JSON schema, for editor completion and checking."""
    return Config.model_json_schema()
