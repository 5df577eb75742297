"""Architecture detection from a state dict's key names and tensor shapes (in the spirit of
spandrel), plus the key renames that bring other layouts to ours.

The detectors and renames live beside each architecture (its ``ARCHS`` entry in ``superres.archs``);
this module runs them all. Detection does not depend on order: every detector is tried and at most
one may match; two matches are a bug in the detectors and raise an error naming both. SRCNN and
FSRCNN do not store their scale in the weights: ``load_model(..., scale=S)`` supplies it.
"""

from __future__ import annotations

import torch

from superres.archs import REGISTRY
from superres.zoo.checkpoint import CheckpointError

StateDict = dict[str, torch.Tensor]


def _single(matches: list[tuple[str, object]], what: str):
    if len(matches) > 1:
        raise CheckpointError(f"the weights match {' and '.join(name for name, _ in matches)} {what}; "
                              "the detectors must exclude each other")
    return matches[0] if matches else None


def normalize_layout(s: StateDict) -> tuple[StateDict, dict]:
    """Bring other official layouts to ours: (renamed state dict, constructor arguments they imply).

    For example xinntao/ESRGAN's ``RRDB_trunk.N`` and ``model.N`` keys (-> RRDBNet), MMagic's MSRResNet
    (``upsample_lrelu=False``) and EDSRNet (``img_range=1``). Unchanged if the layout is ours.
    """
    found = _single([(name, out) for name, spec in REGISTRY.items()
                     if spec.convert is not None and (out := spec.convert(s)) is not None], "as foreign layouts")
    return found[1] if found else (s, {})


def detect(state: StateDict) -> tuple[str, dict] | None:
    """(architecture name, constructor kwargs) for a state dict in our layout, or None."""
    return _single([(name, kwargs) for name, spec in REGISTRY.items() if (kwargs := spec.detect(state)) is not None],
                   "at once")
