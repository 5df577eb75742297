"""Errors whose message is meant for the user: one line, naming the file and the problem."""


class SuperresError(Exception):
    """Base class: the CLI prints the message alone (no traceback) and exits non-zero."""


class ImageError(SuperresError, ValueError):
    """An image file that cannot be read or written (corrupt, empty, unsupported, too large)."""
