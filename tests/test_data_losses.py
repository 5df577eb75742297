"""Training data, schedules and losses, checked against the papers' construction and BasicSR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superres.data import DataError, PairedPatches, SampleStream, eval_pairs
from superres.data.paired import to_y
from superres.io import write_image
from superres.losses import CharbonnierLoss, GANLoss
from superres.ops import imresize, modcrop
from superres.train.config import CosineAnnealingRestart, MultiStep
from superres.train.schedules import lr_factor


@pytest.fixture()
def hr_folder(tmp_path, photos):
    folder = tmp_path / "hr"
    folder.mkdir()
    for i, (name, img) in enumerate(sorted(photos.items())):
        write_image(folder / f"{name}.png", img[: 70 + 10 * i, : 83 + 10 * i])
    return folder


def test_patches_are_aligned_crops_of_the_whole_image_lr(hr_folder):
    data = PairedPatches([str(hr_folder)], scale=3, patch_size=24, flip=False, rot90=False)
    item = data[(1, 1234)]
    pair = data._load(1)
    lr, hr = (item[k].numpy().transpose(1, 2, 0) for k in ("lr", "hr"))
    # the LR patch is a crop of MATLAB bicubic of the *whole* mod-cropped image, and the HR patch is
    # the crop at the same place x3
    assert pair.lr.shape[:2] == (pair.hr.shape[0] // 3, pair.hr.shape[1] // 3)
    np.testing.assert_array_equal(pair.lr, imresize(pair.hr, 1 / 3))
    hits = [(t, left) for t in range(pair.lr.shape[0] - 7) for left in range(pair.lr.shape[1] - 7)
            if np.array_equal(pair.lr[t:t + 8, left:left + 8], np.rint(lr * 255).astype(np.uint8))]
    assert len(hits) == 1
    t, left = hits[0]
    np.testing.assert_array_equal(pair.hr[t * 3:t * 3 + 24, left * 3:left * 3 + 24], np.rint(hr * 255))


def test_augmentation_is_the_same_for_lr_and_hr_and_y_mode(hr_folder):
    data = PairedPatches([str(hr_folder)], scale=2, patch_size=32, y_channel=True)
    for seed in range(8):
        item = data[(0, seed)]
        assert item["lr"].shape == (1, 16, 16) and item["hr"].shape == (1, 32, 32)
        assert 16 / 255 - 1e-6 <= item["hr"].min() and item["hr"].max() <= 235 / 255 + 1e-6
        # the LR patch is close to the HR patch shrunk: same orientation
        shrunk = imresize(item["hr"][0].numpy().astype(np.float64), 0.5)
        assert np.abs(shrunk - item["lr"][0].numpy()).mean() < 0.03
    np.testing.assert_allclose(to_y(np.full((1, 1, 3), 255, np.uint8)), 235 / 255, atol=1e-6)


def test_scale_augmentation_drops_copies_smaller_than_a_patch(hr_folder):
    data = PairedPatches([str(hr_folder)], scale=2, patch_size=48, hr_scales=[1.0, 0.8, 0.6])
    # 0.6 x 70 = 42 < 48: that copy is left out; 0.6 x 80 = 48 stays
    assert sorted(s for _, _, s in data.items) == [0.6, 0.8, 0.8, 1.0, 1.0]
    with pytest.warns(UserWarning, match="1 training image.* smaller than the 72-pixel patch left out: astronaut"):
        assert len(PairedPatches([str(hr_folder)], scale=2, patch_size=72)) == 1  # 70x83 out, 80x93 in
    with pytest.raises(DataError, match="smaller than the 96-pixel patch"):
        PairedPatches([str(hr_folder)], scale=2, patch_size=96)


def test_data_errors_are_clear(tmp_path, hr_folder, photos):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        PairedPatches([str(tmp_path / "empty")], 2, 16)
    lr = tmp_path / "lr"
    lr.mkdir()
    write_image(lr / "astronaut.png", photos["astronaut"][:10, :10])
    with pytest.raises(DataError, match="no LR image for 1 HR image"):
        eval_pairs(hr_folder, 2, lr)
    write_image(lr / "chelsea_x2.png", photos["chelsea"][:10, :10])
    with pytest.raises(DataError, match=r"LR is 10x10, expected 41x35"):
        eval_pairs(hr_folder, 2, lr)
    with pytest.raises(DataError, match="not a multiple of the scale"):
        PairedPatches([str(hr_folder)], 3, 32)


def test_eval_pairs_match_the_papers_lr(shared_data):
    pairs = eval_pairs(shared_data / "Set5" / "HR", 3)
    given = eval_pairs(shared_data / "Set5" / "HR", 3, shared_data / "Set5" / "LR_bicubic" / "X3")
    for made, read in zip(pairs, given, strict=True):
        np.testing.assert_array_equal(made.lr, read.lr)  # exact at x3 (see ../shared/data/README.md)
        assert made.hr.shape == modcrop(made.hr, 3).shape


def test_sample_stream_splits_global_batches_between_ranks():
    one = iter(SampleStream(10, 6, seed=5))
    ranks = [iter(SampleStream(10, 6, seed=5, rank=r, world_size=3)) for r in range(3)]
    for _ in range(7):  # crosses epoch boundaries (10 items, 6 per batch)
        assert next(one) == [s for it in ranks for s in next(it)]
    resumed = iter(SampleStream(10, 6, seed=5, start_iter=4))
    fresh = iter(SampleStream(10, 6, seed=5))
    for _ in range(4):
        next(fresh)
    assert next(resumed) == next(fresh)
    epoch = [i for _ in range(5) for i, _ in next(iter(SampleStream(10, 2, seed=1, start_iter=_)))]
    assert sorted(epoch) == list(range(10))  # each epoch visits every item once
    with pytest.raises(DataError, match="not divisible"):
        SampleStream(10, 5, seed=0, world_size=2)


def test_schedules_match_basicsr(basicsr):
    from basicsr.models.lr_scheduler import CosineAnnealingRestartLR

    periods, weights = [10, 20, 15], [1.0, 0.5, 0.25]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    ref = CosineAnnealingRestartLR(opt, periods, weights, eta_min=1e-3)
    ours = lr_factor(CosineAnnealingRestart(type="CosineAnnealingRestart", periods=periods,
                                            restart_weights=weights, eta_min=1e-3), 0.2)
    for it in range(45):
        assert 0.2 * ours(it) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), it
        opt.step()
        ref.step()
    step = lr_factor(MultiStep(type="MultiStep", milestones=[3, 5], gamma=0.5), 1.0, warmup_iters=2)
    assert [step(i) for i in range(7)] == [0.5, 1, 1, 0.5, 0.5, 0.25, 0.25]


@pytest.mark.parametrize("gan_type", ["vanilla", "lsgan", "hinge", "wgan_softplus"])
def test_gan_losses_match_basicsr(basicsr, gan_type):
    from basicsr.losses.gan_loss import GANLoss as Reference

    logits = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    ours, ref = GANLoss(gan_type), Reference(gan_type)
    for real in (True, False):
        for disc in (True, False):
            if gan_type == "hinge" and not disc and not real:
                continue  # BasicSR's generator hinge loss is defined for target_is_real only
            torch.testing.assert_close(ours(logits, real, disc), ref(logits, real, is_disc=disc))


def test_relativistic_loss_is_esrgans():
    real, fake = torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.5])
    d_real = torch.sigmoid(real - fake.mean())
    d_fake = torch.sigmoid(fake - real.mean())
    expected_d = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean()) / 2
    expected_g = -(torch.log(1 - d_real).mean() + torch.log(d_fake).mean()) / 2
    loss = GANLoss("vanilla")
    torch.testing.assert_close(loss.relativistic(real, fake, for_discriminator=True), expected_d)
    torch.testing.assert_close(loss.relativistic(real, fake, for_discriminator=False), expected_g)


def test_charbonnier_matches_basicsr(basicsr):
    from basicsr.losses.basic_loss import CharbonnierLoss as Reference

    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(CharbonnierLoss()(a, b), Reference()(a, b))
