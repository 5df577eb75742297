"""DAT-light's official weights (``superres fetch dat-light-x2 dat-light-x3 dat-light-x4``) on Set5,
scored as the paper scores them (``superres eval``: LR by MATLAB bicubic from the mod-cropped HR, the
whole image through the network in fp32, Y channel, crop = scale), against the published numbers.
Exits non-zero if a mean PSNR is more than 0.05 dB (or an SSIM more than 0.0005) off.

Published: Chen et al., "Dual Aggregation Transformer for Image Super-Resolution", ICCV 2023,
supplementary material Table 2 (lightweight SR; the official repository's figs/Table-3.png).

    python benchmarks/dat_light_set5.py [--data ../shared/data] [--scales 2 3 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {2: (38.24, 0.9614), 3: (34.76, 0.9299), 4: (32.57, 0.8991)}  # Set5 PSNR (dB) / SSIM


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--scales", type=int, nargs="+", default=sorted(PUBLISHED))
    args = parser.parse_args()

    import numpy as np

    from superres.metrics.evaluate import evaluate_model

    hr = args.data / "Set5" / "HR"
    failed = False
    print(f"{'model':14} {'PSNR':>8} {'paper':>7} {'diff':>6}  {'SSIM':>7} {'paper':>7}  seconds")
    for scale in args.scales:
        tic = time.perf_counter()
        records, _ = evaluate_model(f"dat-light-x{scale}", hr, scale)
        seconds = time.perf_counter() - tic
        psnr = float(np.mean([r["psnr"] for r in records]))
        ssim = float(np.mean([r["ssim"] for r in records]))
        paper_psnr, paper_ssim = PUBLISHED[scale]
        ok = abs(psnr - paper_psnr) <= 0.05 and abs(ssim - paper_ssim) <= 0.0005
        failed |= not ok
        print(f"dat-light-x{scale:<3} {psnr:8.4f} {paper_psnr:7.2f} {psnr - paper_psnr:+6.3f}  {ssim:7.4f} "
              f"{paper_ssim:7.4f}  {seconds:7.1f}{'' if ok else '  OFF'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
