"""Files decoded and encoded in threads beside the network.

Image decoders and encoders (PIL's zlib and libjpeg, OpenCV) and PyTorch's kernels release the GIL, so
reading the next file and writing the previous result in threads hides their time behind the network's:
a folder runs at the network's speed rather than at the sum of the three.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")
Result = TypeVar("Result")


def run_pipelined(items: Iterable[Item], read: Callable[[Item], Loaded], compute: Callable[[Item, Loaded], Result],
                  write: Callable[[Item, Result], None], on_error: Callable[[Item, Exception], None],
                  errors: tuple[type[Exception], ...], ahead: int = 2, pending_writes: int = 2) -> tuple[int, int]:
    """``write(item, compute(item, read(item)))`` for each item, in order; (done, failed).

    ``read`` runs up to ``ahead`` items ahead and ``write`` in one background thread with at most
    ``pending_writes`` results waiting (they can be large), while ``compute`` runs in the calling thread.
    An item whose step raises one of ``errors`` goes to ``on_error`` and the others go on; anything else
    (a bug, KeyboardInterrupt) propagates after the writes already started have finished, so no
    finished result is lost.
    """
    done = failed = 0
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="superres-read") as readers, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="superres-write") as writer:
        queue = iter(items)
        end = object()
        reads: deque[tuple[Item, Future]] = deque()
        writes: deque[tuple[Item, Future]] = deque()

        def fill() -> None:
            while len(reads) < ahead and (item := next(queue, end)) is not end:
                reads.append((item, readers.submit(read, item)))

        def settle(keep: int) -> None:
            nonlocal done, failed
            while len(writes) > keep:
                item, future = writes.popleft()
                try:
                    future.result()
                    done += 1
                except errors as e:
                    on_error(item, e)
                    failed += 1

        try:
            fill()
            while reads:
                item, loading = reads.popleft()
                fill()  # the next files decode while this one runs
                try:
                    result = compute(item, loading.result())
                except errors as e:
                    on_error(item, e)
                    failed += 1
                    continue
                writes.append((item, writer.submit(write, item, result)))
                settle(pending_writes)
        finally:
            for _, future in reads:
                future.cancel()
            settle(0)
    return done, failed
