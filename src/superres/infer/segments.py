"""Long videos as a plan of segments: shots found by PySceneDetect, long shots cut at a length cap,
each segment with the temporal context its network needs, and a manifest that lets an interrupted
run go on where it stopped.

Planning is pure (frame counts and cut positions in, segments out); the manifest is a JSON file in
a work folder beside the output, rewritten atomically each time a segment is finished. A segment's
context frames are fed to the network and their outputs dropped, so a recurrent network's
propagation reaches the segment's edges as it would in the whole shot; context never crosses a cut.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from superres.errors import SuperresError
from superres.io.files import atomic_write

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# PySceneDetect's content detector on frames this wide (the default threshold and minimum shot length).
SHOT_WIDTH = 160


@dataclass(frozen=True)
class Unit:
    """One segment: output frames ``start``..``end - 1`` (stream indices), fed with ``before`` frames of
    context ahead and ``after`` behind, all inside one shot."""

    index: int
    start: int
    end: int
    before: int = 0
    after: int = 0

    @property
    def first(self) -> int:
        return self.start - self.before

    @property
    def last(self) -> int:  # one past the last frame fed
        return self.end + self.after

    @property
    def frames(self) -> int:
        return self.end - self.start


def unit_outputs(unit: Unit, factor: int, total: int) -> int:
    """Output frames of ``unit`` when ``factor - 1`` new frames follow each source frame (interpolation): the
    last frame of the stream is held for as long as its predecessor lasted, so every unit makes ``frames x
    factor``; a stream of one frame has nothing to interpolate."""
    return unit.frames if total == 1 else unit.frames * factor


class ShotDetector:
    """Scene cuts with PySceneDetect's content detector (HSV differences of consecutive frames), fed
    small frames one at a time: ``add(rgb)`` for each frame in order, then ``cuts``, the indices of the
    frames that start a new shot."""

    def __init__(self, threshold: float = 27.0, min_shot: int = 15):
        from scenedetect.detectors import ContentDetector

        self.detector = ContentDetector(threshold=threshold, min_scene_len=min_shot)
        self.count = 0
        self.cuts: list[int] = []

    def add(self, rgb_small: np.ndarray) -> None:
        self.cuts += [c for c in self.detector.process_frame(self.count, rgb_small[..., ::-1]) if c > 0]
        self.count += 1

    def finish(self) -> list[int]:
        post = getattr(self.detector, "post_process", None)
        if post is not None:
            self.cuts += [c for c in post(self.count) or [] if 0 < c < self.count]
        self.cuts = sorted(set(self.cuts))
        return self.cuts


def find_cuts(frames: Iterable[np.ndarray], threshold: float = 27.0, min_shot: int = 15) -> list[int]:
    """Indices of the frames that start a new shot, in a sequence of small RGB frames."""
    detector = ShotDetector(threshold, min_shot)
    for rgb in frames:
        detector.add(rgb)
    return detector.finish()


def plan_segments(total: int, cuts: Iterable[int], max_frames: int, context: int) -> list[Unit]:
    """Cut ``total`` frames at the shot boundaries ``cuts``, and each shot into pieces of at most
    ``max_frames`` (of even lengths), each with up to ``context`` frames of context on each side from its
    own shot."""
    if max_frames < 1:
        raise ValueError(f"segments must hold at least one frame, got {max_frames}")
    edges = [0, *sorted(c for c in set(cuts) if 0 < c < total), total]
    units: list[Unit] = []
    for lo, hi in itertools.pairwise(edges):
        pieces = math.ceil((hi - lo) / max_frames)
        bounds = [lo + round(i * (hi - lo) / pieces) for i in range(pieces + 1)]
        for start, end in itertools.pairwise(bounds):
            units.append(Unit(len(units), start, end, min(context, start - lo), min(context, hi - end)))
    return units


def shots(units: list[Unit]) -> int:
    """How many shots a plan covers (a unit with no context ahead of it, at its shot's start)."""
    return sum(1 for u in units if u.before == 0 and (u.index == 0 or units[u.index - 1].after == 0))


def file_fingerprint(path: Path) -> dict:
    """What identifies a source cheaply: its size, modification time and a hash of its first and last MiB
    (a file copied elsewhere keeps it; an edited one does not). A folder of frames: its files' names,
    sizes and times."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_file():
                st = entry.stat()
                digest.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"folder": digest.hexdigest()[:32]}
    st = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            digest.update(f.read(1 << 20))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()[:32]}


def _difference(old: dict, new: dict) -> str:
    """Why a manifest made with ``old`` settings does not fit ``new`` ones, in a few words."""
    if old.get("version") != new.get("version"):
        return "the work folder was made by another version of superres"
    if old.get("source") != new.get("source"):
        return "the source changed"
    if old.get("model") != new.get("model"):
        return "the model changed"
    for key in sorted(set(old.get("options", {})) | set(new.get("options", {}))):
        a, b = old.get("options", {}).get(key), new.get("options", {}).get(key)
        if a != b:
            return f"option {key} changed ({a} -> {b})"
    return "the plan changed"


class Manifest:
    """The work folder's record: the settings (``key``), the plan, and which segments are done."""

    def __init__(self, folder: Path, key: dict, plan: dict, done: dict[int, int] | None = None):
        self.folder, self.key, self.plan = Path(folder), key, plan
        self.done: dict[int, int] = dict(done or {})  # unit index -> frames written

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST

    @classmethod
    def resume(cls, folder: Path, key: dict) -> tuple[Manifest | None, str | None]:
        """The manifest in ``folder`` if it was made with the same ``key``; else (None, why not) and the
        folder is emptied. (None, None): there is no work folder."""
        folder = Path(folder)
        try:
            data = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            if folder.exists():
                shutil.rmtree(folder)
                return None, "the work folder had no manifest"
            return None, None
        except (OSError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)
            return None, "its manifest could not be read"
        if data.get("key") != key:
            shutil.rmtree(folder, ignore_errors=True)
            return None, _difference(data.get("key", {}), key)
        manifest = cls(folder, key, data["plan"], {int(k): v for k, v in data.get("done", {}).items()})
        return manifest, None

    def units(self) -> list[Unit]:
        return [Unit(**u) for u in self.plan["units"]]

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {"key": self.key, "plan": self.plan, "done": {str(k): v for k, v in sorted(self.done.items())}}
        atomic_write(self.path, json.dumps(data).encode())  # fsynced: a power cut keeps it

    @property
    def factor(self) -> int:
        """Output frames per source frame (interpolation)."""
        return self.plan.get("factor", 1)

    def outputs(self, unit: Unit) -> int:
        """The frames ``unit`` writes."""
        return unit_outputs(unit, self.factor, self.units()[-1].end)

    def finish(self, unit: Unit, frames: int) -> None:
        if frames != self.outputs(unit):
            raise SuperresError(f"segment {unit.index}: wrote {frames} frames, expected {self.outputs(unit)}")
        self.done[unit.index] = frames
        self.save()


def new_plan(units: list[Unit], pts: list[int] | None, cuts: list[int], context: int, factor: int = 1) -> dict:
    return {"units": [asdict(u) for u in units], "pts": pts, "cuts": cuts, "context": context, "factor": factor}

