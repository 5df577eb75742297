"""Training: typed configs, the training loop, checkpoints and schedules (imported on demand)."""

from superres.train.config import Config, ConfigError, json_schema, load_config, load_run_config, resume_settings
from superres.train.trainer import Trainer, train

__all__ = ["Config", "ConfigError", "Trainer", "json_schema", "load_config", "load_run_config", "resume_settings",
           "train"]
