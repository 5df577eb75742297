"""What a newcomer trips on with images (issue 35): a small --tile's hidden cost, alpha that is not
exactly opaque where the input is, and messages that must read in words."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from superres.infer import Upscaler
from superres.infer.image import MAX_TILE_OVERHEAD, minimum_tile
from superres.ops.tiling import TilePlan, plan_overhead


def _tile_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "--tile" in str(w.message)]


def _nearest(scale: int):
    return lambda tile, *_: np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)


# --- 3. a small --tile is a silent slowdown ---------------------------------------------------------------


def test_a_small_tile_warns_once_with_its_overlap_and_cost(photos):
    """The issue's case: --tile 170 on a 320x240 image with realesrgan-x4plus (the network stubbed by a
    nearest-neighbour x4: the plan and the message are what is tested, not the network)."""
    up = Upscaler("realesrgan-x4plus", tile=170, precision="fp32", backend="torch")
    up.runner.forward = _nearest(4)
    image = (photos["chelsea"][:240, :320, :3] * 255).round().astype(np.uint8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        up.upscale_array(image)
        up.upscale_array(np.dstack([image, np.full((240, 320), 255, np.uint8)]))  # a batch, RGBA: two passes
    assert _tile_warnings(record) == [
        "--tile 170: neighbouring tiles overlap by 146 pixels (realesrgan-x4plus needs 69 pixels of context at "
        "each tile edge, plus 8 to blend), so a 320x240 image computes 12.0x the pixels of one whole pass; "
        "use --tile auto, or at least --tile 504"]


def test_a_tile_that_costs_little_or_was_not_chosen_says_nothing(photos):
    image = (photos["chelsea"][:48, :64, :3] * 255).round().astype(np.uint8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        Upscaler("realesr-animevideov3", precision="fp32", backend="torch").upscale_array(image)  # auto
        Upscaler("realesr-animevideov3", tile=64, precision="fp32", backend="torch").upscale_array(image)  # whole
        small = Upscaler("realesr-animevideov3", tile=40, precision="fp32", backend="torch")
        small.upscale_array(image)  # a real network in 8 tiles of 40: 4.2x the pixels
    assert _tile_warnings(record) == [
        "--tile 40: neighbouring tiles overlap by 32 pixels (realesr-animevideov3 needs 14 pixels of context "
        "at each tile edge, plus 4 to blend), so a 64x48 image computes 4.2x the pixels of one whole pass; "
        "use --tile auto, or at least --tile 115"]


@pytest.mark.parametrize("name, tile", [("realesrgan-x4plus", 504), ("realesrgan-x4plus-anime", 432),
                                        ("realesr-animevideov3", 115)])
def test_minimum_tile_keeps_the_overlap_within_its_bound(name, tile):
    from superres.zoo import MODELS

    assert minimum_tile(name) == minimum_tile(MODELS[name]) == tile
    margin = MODELS[name].margin
    ramp = max(4, margin // 8)
    sides = range(tile + 1, 40 * tile, 97)
    assert max(plan_overhead(side, side, TilePlan(tile, margin, ramp)) for side in sides) <= MAX_TILE_OVERHEAD
    assert plan_overhead(40 * tile, 40 * tile, TilePlan(tile * 2 // 3, margin, ramp)) > MAX_TILE_OVERHEAD


def test_minimum_tile_is_unknown_without_a_registered_margin():
    assert minimum_tile("bicubic") is None and minimum_tile("realcugan-2x-conservative") is None
    assert Upscaler("bicubic").minimum_tile is None
    assert Upscaler("realesr-animevideov3").minimum_tile == 115
    assert Upscaler("realesr-animevideov3", tile_pad=30).minimum_tile == smallest(2 * 30 + 4)


def smallest(overlap: int) -> int:
    from superres.ops.tiling import smallest_tile

    return smallest_tile(overlap, MAX_TILE_OVERHEAD)


# --- 5. alpha stays exactly opaque and exactly transparent ------------------------------------------------


def _sticker(photos, side: int, radius: float, dtype) -> np.ndarray:
    """A photo crop cut out as a disc with a 2-pixel soft rim: opaque inside, transparent outside."""
    yy, xx = np.mgrid[:side, :side]
    r = np.hypot(yy - side / 2 + 0.5, xx - side / 2 + 0.5)
    alpha = np.clip((radius - r) / 2 + 0.5, 0, 1)
    rgba = np.dstack([photos["chelsea"][100:100 + side, 150:150 + side, :3], alpha]).astype(np.float32)
    if dtype == np.float32:
        return rgba
    top = np.iinfo(dtype).max
    return (rgba * top).round().astype(dtype)


@pytest.mark.parametrize("model, alpha, dtype, outscale", [
    ("realesr-animevideov3", "model", np.uint8, None),  # before: 70% of the interior at 253-254
    ("realesr-animevideov3", "model", np.uint16, None),
    ("realesr-animevideov3", "model", np.float32, 3),
    ("realesr-animevideov3", "bicubic", np.uint8, 2.5),
    ("bicubic", "model", np.uint16, None),
    ("realesrgan-x4plus-anime", "model", np.uint8, None),  # the model: before, all of it at 254
])
def test_solid_alpha_stays_exact(photos, model, alpha, dtype, outscale):
    side, radius = (24, 7.0) if model == "realesrgan-x4plus-anime" else (40, 13.0)
    rgba = _sticker(photos, side, radius, dtype)
    out = Upscaler(model, alpha=alpha).upscale_array(rgba, outscale)
    a = out[..., 3]
    top = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    # output pixel centres in input pixels; the input is opaque within radius - 1, transparent beyond radius + 1
    oy, ox = np.mgrid[:a.shape[0], :a.shape[1]]
    r = np.hypot((oy + 0.5) * side / a.shape[0] - side / 2, (ox + 0.5) * side / a.shape[1] - side / 2)
    inside, outside = r < radius - 1 - 3.5, r > radius + 1 + 3.5  # 2 pixels of reach, and rounding
    assert (a[inside] == top).all(), f"{(a[inside] != top).mean():.0%} of the interior is not opaque"
    assert (a[outside] == 0).all(), f"{(a[outside] != 0).mean():.0%} of the outside is not transparent"
    rim = a[(r > radius - 1) & (r < radius + 1)]
    assert ((rim > 0) & (rim < top)).mean() > 0.5  # the edge is still the model's, not snapped


# --- 7. messages in words ---------------------------------------------------------------------------------


def test_a_reach_that_does_not_settle_is_said_in_words():
    from superres.infer.context import measure_margin

    def global_model(x):  # every output pixel depends on the whole image, as Real-CUGAN's do
        return _nearest(2)(x) + 0.1 * x.mean()

    with pytest.warns(UserWarning) as record:
        margin = measure_margin(global_model, 2, start=32, limit=64, name="realcugan-2x-conservative")
    assert [str(w.message) for w in record] == [
        f"realcugan-2x-conservative: tiles get {margin} pixels of context at each edge, the most superres can "
        "measure; this model looks further, so a tiled result may differ slightly from a whole-image one "
        "(--tile 0 runs images whole)"]


def test_an_upscaler_names_its_model_in_the_reach_message(monkeypatch, tmp_path):
    import superres.infer.context as context
    from superres.zoo import load_model, save_model

    path = tmp_path / "my-finetune.safetensors"
    save_model(load_model("realesr-animevideov3"), path)
    monkeypatch.setenv("SUPERRES_CACHE_DIR", str(tmp_path / "cache"))
    real = context.measure_margin
    monkeypatch.setattr(context, "measure_margin", lambda model, scale, channels, *, name, align, **_: real(
        lambda x: _nearest(scale)(x) + 0.1 * x.mean(), scale, start=32, limit=64, name=name, align=align))
    with pytest.warns(UserWarning, match=r"^my-finetune\.safetensors: tiles get 24 pixels of context"):
        assert Upscaler(str(path)).margin == 24


def test_an_image_that_runs_whole_does_not_wait_for_the_margin(monkeypatch, tmp_path, photos):
    """A model brought as a file has no registered margin: superres measures it (once per set of weights) when
    an image first needs tiles, not before one that runs whole (a large transformer's measurement takes
    minutes on a CPU)."""
    import superres.infer.context as context
    from superres.zoo import load_model, save_model

    path = tmp_path / "my-finetune.safetensors"
    save_model(load_model("realesr-animevideov3"), path)
    monkeypatch.setenv("SUPERRES_CACHE_DIR", str(tmp_path / "cache"))
    measured = []
    monkeypatch.setattr(context, "measure_margin", lambda model, scale, channels, *, name, align, **_:
                        measured.append(name) or 12)
    image = photos["chelsea"][:100, :120].copy()
    options = {"device": "cpu", "precision": "fp32", "backend": "torch"}
    whole = Upscaler(str(path), **options).upscale_array(image)
    assert measured == []
    tiled = Upscaler(str(path), tile=64, **options)
    assert measured == []  # (not yet: on the first image that needs tiles)
    assert np.abs(tiled.upscale_array(image) - whole).max() <= 1 / 255
    assert measured == ["my-finetune.safetensors"] and tiled.margin == 12


def test_the_status_line_reads_in_words(monkeypatch):
    import superres.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    budget = 137**2 * (64000 + 16 * 12)  # ncnn's memory per input pixel of realesrgan-x4plus, and its output
    assert Upscaler("realesrgan-x4plus", budget=budget, device="cpu").summary() == (
        "8-bit images: precision bf16, backend torch; 16-bit and float: precision fp32, backend ncnn for images "
        "up to 137x137 pixels or the same area, torch for larger ones")
    assert Upscaler("realesrgan-x4plus", device="cpu", precision="fp32", backend="torch").summary() == (
        "precision fp32, backend torch")


def test_superres_models_shows_each_models_minimum_tile(capsys):
    from superres.cli import main
    from superres.infer.image import minimum_tile

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split("  ")
    assert "min tile" in [h.strip() for h in header if h.strip()]
    row = next(line for line in lines if line.startswith("realesrgan-x4plus "))
    assert f" {minimum_tile('realesrgan-x4plus')} " in row
