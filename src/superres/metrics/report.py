"""Score tables: printed as text, written as JSON or CSV (records as :mod:`superres.metrics.folders` makes them)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from superres.io import atomic_write

DIGITS = {"psnr": 4, "ssim": 4, "niqe": 4, "brisque": 4, "frames": 0, "alpha": 3, "tof": 4, "warp": 6}


def format_table(records: list[dict], keys: list[str]) -> str:
    """A text table: one line per record, its name and ``keys`` in columns."""
    width = max([len(r["name"]) for r in records] + [4])
    lines = [f"{'name':<{width}}  " + "  ".join(f"{k.upper():>9}" for k in keys)]
    for r in records:
        lines.append(f"{r['name']:<{width}}  " + "  ".join(f"{r[k]:>9.{DIGITS[k]}f}" for k in keys))
    return "\n".join(lines)


def write_report(records: list[dict], keys: list[str], json_path: Path | None = None,
                 csv_path: Path | None = None) -> None:
    """The records as JSON (every field) and/or CSV (name and ``keys``), each written atomically."""
    if json_path:
        atomic_write(json_path, (json.dumps(records, indent=2, allow_nan=True) + "\n").encode())
    if csv_path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["name", *keys], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        atomic_write(csv_path, buf.getvalue().encode())
