"""The ``superres`` command. Each sub-command lives in its own module, registers its own parser and
imports what it needs only when it runs, so the command starts fast."""

from __future__ import annotations

import argparse
import sys

from superres import __version__
from superres.cli import degrade, demo, eval, export, faces, fetch, metrics, models, serve, train, upscale, video
from superres.cli.common import error, note
from superres.errors import SuperresError, Terminated

# the order of `superres --help`
COMMANDS = (metrics, degrade, upscale, video, faces, train, eval, models, fetch, export, serve, demo)


class _Parser(argparse.ArgumentParser):
    """A bad argument is one line, ``superres COMMAND: error: ...`` (exit 2), not the whole usage above it:
    ``-h`` shows that. Sub-command parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="superres", description="Image and video super-resolution.")
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
    restore = _terminate_like_ctrl_c()
    restore_warnings = _one_line_warnings()
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except (SuperresError, ValueError) as e:
        error(str(e))
        return 1
    except KeyboardInterrupt as e:  # Terminated too: the command cleaned up (and said what it saved), no error
        note(_stopped_by(e))
        return 128 + e.signum if isinstance(e, Terminated) else 130
    except BrokenPipeError:  # the reader went away (`superres schema | head`): nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141  # 128 + SIGPIPE, as a shell reports it
    except OSError as e:  # a file or folder a command did not expect to fail on: still one line naming it
        error(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e))
        return 1
    finally:
        restore()
        restore_warnings()


def _stopped_by(e: KeyboardInterrupt) -> str:
    """``stopped by Ctrl-C`` (or the signal's name), and what the command that stopped said about it, if
    anything (``KeyboardInterrupt("checkpoint saved at ...")``)."""
    import signal

    if isinstance(e, Terminated):
        try:
            cause = signal.Signals(e.signum).name
        except ValueError:
            cause = f"signal {e.signum}"
        detail = e.detail  # Terminated's own text is only the signal's number
    else:
        cause, detail = "Ctrl-C", " ".join(str(e).split())
    return f"stopped by {cause}" + (f" ({detail})" if detail else "")


def _one_line_warnings():
    """Warnings (ours and the libraries') as ``superres: warning: MESSAGE``, one line each, below any
    progress bar: not Python's ``file:line: UserWarning`` with a line of source code under it."""
    import warnings

    from superres.cli.common import warn

    old = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        warn(" ".join(str(message).split()))

    warnings.showwarning = show

    def restore() -> None:
        warnings.showwarning = old

    return restore


def _terminate_like_ctrl_c():
    """SIGTERM and SIGHUP raise :class:`Terminated` (a KeyboardInterrupt), so a killed command cleans
    up as an interrupted one does instead of dying on the spot. Returns what puts the old handlers back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, _frame):
        raise Terminated(signum)

    signums = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    old = {signum: signal.signal(signum, handler) for signum in signums}
    return lambda: [signal.signal(signum, previous) for signum, previous in old.items()]


if __name__ == "__main__":
    raise SystemExit(main())
