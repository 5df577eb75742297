"""Training and evaluation data: paired image sets, patches, augmentation, the sample stream."""

from superres.data.paired import DataError, PairedPatches, SampleStream, eval_pairs, load_pair, to_y

__all__ = ["DataError", "PairedPatches", "SampleStream", "eval_pairs", "load_pair", "to_y"]
