"""How the server's main process stops: cleanly, with status 0, leaving no process behind.

Two things went wrong on SIGTERM before:

- Sanic's own handler updates the worker states in its multiprocessing manager from inside
  the signal handler. When the signal lands while the main thread waits for that manager's
  answer (it reads the states ten times a second), the two calls share one connection and
  read each other's replies: `'NoneType' object has no attribute 'get'` in `_sync_states`,
  "Experienced exception while trying to serve", exit status 1, and the workers SIGTERMed
  by the exiting interpreter in the middle of closing their pools ("Event loop is closed").
  The handler here only asks the manager's own loop to stop: the states are then written by
  the main thread, one call at a time.
- The multiprocessing resource tracker (started for the spawned workers and the metrics
  array's lock) ignores SIGTERM and outlives the main process for a moment, so systemd
  SIGKILLed it on every stop. `release_helpers` waits for it before the main process exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from contextlib import suppress
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

TERMINATE = "__TERMINATE__"  # what Sanic's worker manager stops on, read in its own loop


def defer_stop_signals(manager: Any) -> None:
    """SIGTERM and SIGINT stop the server from the manager's loop, not the signal handler.

    `manager` is Sanic's WorkerManager (`app.manager` in `main_process_ready`). A second
    signal once the manager is already stopping its workers kills them, as Sanic does.
    """
    requested = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal requested
        if requested:
            if manager._shutting_down:
                manager.shutdown_signal(signum, frame)  # Sanic's "Killing" path: no state I/O
            return
        requested = True
        log.info("received %s: stopping", signal.Signals(signum).name)
        manager.monitor_publisher.send(TERMINATE)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)


def release_helpers(timeout: float = 10) -> None:
    """Wait for every child of the main process, then for the resource tracker, to end.

    Called once Sanic has stopped its workers and its manager. The metrics array's lock is
    released first (its finalizer would otherwise talk to a stopped tracker at exit, which
    starts a new one), then the tracker sees its pipe closed and exits.
    """
    from multiprocessing import resource_tracker, util

    for child in multiprocessing.active_children():
        child.join(timeout)
        if child.is_alive():
            log.warning("child process %s did not stop in %.0fs: killing it", child.pid, timeout)
            child.kill()
            child.join()
    util._run_finalizers(0)
    tracker = resource_tracker._resource_tracker
    with tracker._lock:
        fd, pid = tracker._fd, tracker._pid
        tracker._fd = tracker._pid = None
    if fd is None:
        return
    os.close(fd)  # the tracker's last open pipe: it cleans up and exits
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    with suppress(ChildProcessError):
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                log.warning("the resource tracker did not stop in %.0fs: killing it", timeout)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.01)
