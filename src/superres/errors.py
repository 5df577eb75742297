"""Errors whose message is meant for the user: one line, naming the file and the problem."""


class SuperresError(Exception):
    """Base class: the CLI prints the message alone (no traceback) and exits non-zero."""


class ImageError(SuperresError, ValueError):
    """An image file that cannot be read or written (corrupt, empty, unsupported, too large)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised in the main thread like Ctrl-C so that the same clean-up runs:
    partial outputs removed, a training checkpoint written."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(f"signal {signum}")
        self.signum, self.detail = signum, detail  # what the command did on stopping, said after the signal
