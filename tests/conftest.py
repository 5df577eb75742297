"""Shared fixtures: real images (bundled samples, ../shared/data when present) and references."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from superres.io import read_image

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "superres" / "samples"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """Converted pretrained weights go to a fresh cache: each run tests the conversion too."""
    import os

    path = tmp_path_factory.mktemp("cache")
    os.environ["SUPERRES_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "Set5" / "HR").is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """The bundled real photographs, float32 RGB in [0, 1]."""
    return {p.stem: read_image(p)[0] for p in sorted(SAMPLES.glob("*.png"))}


@pytest.fixture(scope="session")
def basicsr():
    """BasicSR 1.4.2 (dev-only reference). It imports a torchvision module removed in 0.17."""
    import torchvision.transforms.functional as functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)
    return pytest.importorskip("basicsr")


# Python's own warning filters (no -W, no PYTHONWARNINGS, not -X dev), as a user's `superres` process has them;
# pytest's differ (DeprecationWarning "always", the ignores of pyproject.toml).
_PYTHON_DEFAULT_FILTERS = (("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                           ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                           ("ignore", ResourceWarning, ""))


def run_main(*args, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``superres ARGS`` run in this process, as ``subprocess.run([sys.executable, "-m", "superres", ...],
    capture_output=True, text=True)`` would report it, without the seconds a new process spends importing torch.

    What a user would see on stderr is captured: Python's ``sys.stderr`` (errors, warnings, progress lines),
    whatever C libraries write straight to file descriptor 2 (appended after it), and logging records, which reach
    stderr through logging's last-resort handler as in a process where nothing set logging up (pytest's own
    handlers are taken off the root logger meanwhile). Warnings are filtered as in a fresh Python process.
    ``SystemExit`` (argparse: a bad argument, ``--help``, ``--version``) becomes the return code. ``env`` is set in
    ``os.environ`` for the call only. Not for what needs a process of its own: signals, closed pipes, a warning
    Python shows once per process, environment read at import time, ``python -m superres`` itself."""
    from superres.cli import common, main

    if hasattr(common, "_PlainLines"):  # the clock of plain progress lines starts with the process: a first line
        common._PlainLines.last_line = -float("inf")
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved_env = {key: os.environ.get(key) for key in env or {}}
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    sys.stderr.flush()
    with tempfile.TemporaryFile() as fd2, warnings.catch_warnings():
        warnings.resetwarnings()
        for action, category, module in reversed(_PYTHON_DEFAULT_FILTERS):
            warnings.filterwarnings(action, category=category, module=module)
        warnings.showwarning = _show_warning  # on stderr, as Python does: not into pytest's record of warnings
        saved_fd2 = os.dup(2)
        try:
            os.environ.update({key: str(value) for key, value in (env or {}).items()})
            root.handlers = []
            os.dup2(fd2.fileno(), 2)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                    _stdin(io.StringIO(stdin) if stdin is not None else None):
                try:
                    code = main(argv) or 0
                except SystemExit as e:  # what `python -m superres` would exit with
                    if e.code is None or isinstance(e.code, int):
                        code = e.code or 0
                    else:
                        print(e.code, file=sys.stderr)
                        code = 1
        finally:
            os.dup2(saved_fd2, 2)
            os.close(saved_fd2)
            root.handlers = saved_handlers
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        fd2.seek(0)
        c_stderr = fd2.read().decode(errors="replace")
    return subprocess.CompletedProcess(["superres", *argv], code, out.getvalue(), err.getvalue() + c_stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _stdin(stream):
    if stream is None:
        yield
        return
    old, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = old
