"""The machine's free memory, read without importing torch (the image readers check it before a
decode; :mod:`superres.runtime` re-exports it for the device code)."""

from __future__ import annotations

import os
from pathlib import Path


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get without swapping, as the kernel reports it.

    Linux's ``MemAvailable`` counts the page cache and the other memory the kernel would reclaim;
    ``SC_AVPHYS_PAGES`` (free pages only, the fallback elsewhere) does not, and on a busy machine
    with a full page cache it reads a small fraction of what is really there.
    """
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
