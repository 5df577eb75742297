"""The ``superres`` command. Each sub-command lives in its own module, registers its own parser and
imports what it needs only when it runs, so the command starts fast."""

from __future__ import annotations

import argparse

from superres import __version__
from superres.cli import degrade, demo, eval, export, metrics, models, train, upscale, video
from superres.cli.common import error
from superres.errors import SuperresError

COMMANDS = (metrics, degrade, upscale, video, train, eval, models, export, demo)  # the order of `superres --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superres", description="Image and video super-resolution.")
    parser.add_argument("--version", action="version", version=f"superres {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (SuperresError, ValueError) as e:
        error(str(e))
        return 1
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
