"""DataLoader workers that fail loudly when they cannot hand a batch to the main process.

Why a plain DataLoader hangs: a worker returns each batch with ``data_queue.put((idx, batch))``
on a ``multiprocessing.Queue``, which pickles in a background *feeder thread*. Pickling a tensor
moves its storage to shared memory (``_share_fd_cpu_``: a file in /dev/shm). When that fails -
/dev/shm full, or the file-size limit of ``ulimit -f`` - the feeder thread prints the exception
and drops the batch (``multiprocessing.queues.Queue._on_queue_feeder_error``). The worker is alive
and idle, so the loader's watchdog (which only notices dead workers) waits for that batch forever.

:func:`worker_context` is the start method's own context with one change: its queues, when the
feeder thread of a *DataLoader worker* cannot pickle a batch, send in its place an
``ExceptionWrapper`` holding a :class:`~dlkdd.errors.ResourceError` - the DataLoader re-raises it
in the main process, and the command ends with one line naming the cause and the fix. Pass it
as ``DataLoader(..., multiprocessing_context=worker_context())`` (with ``num_workers > 0``).
"""
from __future__ import annotations

import multiprocessing
import pickle
import multiprocessing.queues
from typing import Any

__all__ = ["worker_context", "SHARE_FIX"]

SHARE_FIX = ("free space in /dev/shm (df -h /dev/shm; in Docker: --shm-size), lift the file-size limit "
             "(ulimit -f unlimited), or load in the main process (--workers 0 / train.workers=0)")


class _LoudQueue(multiprocessing.queues.Queue):
    """A Queue whose feeder thread, in a DataLoader worker, replaces a batch it cannot pickle by its error."""

    def _on_queue_feeder_error(self, e: BaseException, obj: Any) -> None:  # type: ignore[override]
        from torch.utils.data import get_worker_info

        if get_worker_info() is None or not (isinstance(obj, tuple) and len(obj) == 2):
            return super()._on_queue_feeder_error(e, obj)  # not a worker's (index, batch): the default print
        from torch._utils import ExceptionWrapper

        from dlkdd.errors import ResourceError

        first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        # a sample holding something unpicklable is the dataset's fault, not the machine's; anything else (the
        # tensors' move to /dev/shm failing: space, file-size limit) gets the SHARE_FIX advice
        unpicklable = isinstance(e, (pickle.PicklingError, TypeError, AttributeError)) and "pickle" in first.lower()
        fix = ("the batch cannot be pickled: every sample field must be a tensor, number, string or list/dict of "
               "them") if unpicklable else SHARE_FIX
        try:
            raise ResourceError(f"a data-loading worker could not pass a batch to the main process "
                                f"({type(e).__name__}: {first}): {fix}") from None
        except ResourceError:
            wrapped = ExceptionWrapper(where=f"in DataLoader worker process {get_worker_info().id}")
        self.put((obj[0], wrapped))  # plain strings: this one pickles


def worker_context() -> multiprocessing.context.BaseContext:
    """The default start method's context, with queues that never drop a worker's batch silently."""
    base = multiprocessing.get_context()

    class _Context(type(base)):  # type: ignore[misc, valid-type]
        def Queue(self, maxsize: int = 0) -> _LoudQueue:  # noqa: N802 - multiprocessing's name
            return _LoudQueue(maxsize, ctx=base)

    return _Context()
