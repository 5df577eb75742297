"""``superres serve``: the web app and REST API on this machine (the server itself is ``superres.serve``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from superres.cli.common import add_runtime_arguments, run_options
from superres.errors import SuperresError


def cmd_serve(args: argparse.Namespace) -> int:
    from superres.serve.app import check_bind

    check_bind(args.host, args.token, args.insecure_public)
    for folder in args.allow_dir:
        if not folder.is_dir():
            raise SuperresError(f"--allow-dir {folder}: no such folder")
    if args.max_upload_mb <= 0:
        raise SuperresError(f"--max-upload-mb must be positive, got {args.max_upload_mb:g}")
    options = run_options(args)

    import uvicorn

    from superres.serve import ServeConfig, create_app

    config = ServeConfig(options=options, token=args.token, allow_dirs=tuple(args.allow_dir),
                         max_upload=int(args.max_upload_mb * 2**20))
    app = create_app(config)
    host = f"[{args.host}]" if ":" in args.host else args.host
    query = "/?token=" + args.token if args.token else "/"
    print(f"superres serve: open http://{host}:{args.port}{query} (Ctrl-C stops the server)", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web app to upscale and compare, and a REST API",
                       description="Serve the web page (drop images, watch the jobs, compare before and after) "
                       "and the REST API (/openapi.json) on this machine. Jobs run one at a time on the device, "
                       "reusing the loaded models.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; others need --token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="a secret every request must carry (Authorization: Bearer TOKEN or ?token=)")
    p.add_argument("--insecure-public", action="store_true",
                   help="allow listening beyond this machine without a token")
    p.add_argument("--allow-dir", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder whose files jobs may name by server-side path (repeatable)")
    p.add_argument("--max-upload-mb", type=float, default=200, help="largest upload accepted, in MiB (default 200)")
    p.add_argument("--tile", default="auto", help="tile size in input pixels: auto (from memory), 0 (none) or N")
    add_runtime_arguments(p)
    p.set_defaults(func=cmd_serve)
