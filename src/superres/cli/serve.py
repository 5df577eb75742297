"""``superres serve``: the web app and REST API on this machine (the server itself is ``superres.serve``)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from superres.cli.common import TILE_HELP, add_runtime_arguments, run_options
from superres.errors import SuperresError


def cmd_serve(args: argparse.Namespace) -> int:
    from superres.serve.app import check_bind

    check_bind(args.host, args.token, args.insecure_public)
    for folder in args.allow_dir:
        if not folder.is_dir():
            raise SuperresError(f"--allow-dir {folder}: no such folder")
    options = run_options(args)

    from superres.serve import ServeConfig, create_app
    from superres.serve.app import serve

    limits = {"max_pixels": args.max_pixels, "sync_max_waiting": args.max_waiting}
    config = ServeConfig(options=options, token=args.token, allow_dirs=tuple(args.allow_dir),
                         max_upload=int(args.max_upload_mb * 2**20),
                         **{k: v for k, v in limits.items() if v is not None})  # None: the server's default
    app = create_app(config)
    host = f"[{args.host}]" if ":" in args.host else args.host
    query = "/?token=" + args.token if args.token else "/"
    print(f"superres serve: open http://{host}:{args.port}{query} (Ctrl-C stops the server)", file=sys.stderr,
          flush=True)
    serve(app, args.host, args.port)
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1 to 65535, got {text!r}")
    return int(text)


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0) or value * 2**20 < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of MiB, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web app to upscale and compare, and a REST API",
                       description="Serve the web page (drop images, watch the jobs, compare before and after) "
                       "and the REST API (/openapi.json) on this machine. Jobs run one at a time on the device, "
                       "reusing the loaded models.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; others need --token)")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--token", help="a secret every request must carry (Authorization: Bearer TOKEN or ?token=)")
    p.add_argument("--insecure-public", action="store_true",
                   help="allow listening beyond this machine without a token")
    p.add_argument("--allow-dir", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder whose files jobs may name by server-side path (repeatable)")
    p.add_argument("--max-upload-mb", type=_megabytes, default=200,
                   help="largest upload accepted, in MiB (default 200)")
    p.add_argument("--max-pixels", type=_positive_int, metavar="N",
                   help="largest image or video frame accepted, in pixels, checked before decoding (default "
                   "50000000: lower than the other commands' 400000000, as clients choose the files)")
    p.add_argument("--max-waiting", type=_positive_int, metavar="N",
                   help="POST /v1/upscale requests that may wait at once; more get 429 (default 16)")
    p.add_argument("--tile", default="auto", help=TILE_HELP)
    add_runtime_arguments(p)
    p.set_defaults(func=cmd_serve)
