"""Plot validation PSNR against iteration from training logs (``runs/NAME/log.jsonl``) into a PNG.

    python docs/plot_curves.py runs/srcnn_x3_t91 runs/fsrcnn_x3_t91 runs/espcn_x3_t91 -o docs/training-curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt  # without a display, matplotlib draws with Agg


def curves(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    """{validation set: (iterations, PSNR)} from one run's log."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key.startswith("val/") and key.endswith("/psnr"):
                its, values = out.setdefault(key.split("/")[1], ([], []))
                its.append(record["iter"])
                values.append(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    sets = sorted({name for run in args.runs for name in curves(run)})
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        for run in args.runs:
            if name in (c := curves(run)):
                ax.plot(*c[name], marker=".", label=run.name)
        ax.set(title=f"{name}: Y-PSNR, crop = scale", xlabel="iteration", ylabel="dB")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)


if __name__ == "__main__":
    main()
