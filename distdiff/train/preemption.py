"""Preemption notices: SIGUSR1 asks for a checkpoint now, SIGTERM for a checkpoint and a clean stop.

A signal handler only sets a flag; the training loop polls it once per step (`poll`), where a
checkpoint can be written safely. Under Ray the driver (the process `ray job stop` signals) forwards
its signals through the cluster and each worker process handles its own; the Ray context combines
these requests with Ray's own node-drain notice over all ranks, so every rank saves at the same step.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SAVE = "save"  # checkpoint, then keep training
STOP = "stop"  # checkpoint, then end the stage early
_PRIORITY = {None: 0, SAVE: 1, STOP: 2}

_lock = threading.Lock()
_pending: str | None = None


def request(kind: str) -> None:
    """Record a request (SAVE or STOP); a STOP is never downgraded to a SAVE."""
    global _pending
    with _lock:
        if _PRIORITY[kind] > _PRIORITY[_pending]:
            _pending = kind


def poll() -> str | None:
    """Take the pending request (None, SAVE or STOP) and clear it."""
    global _pending
    with _lock:
        kind, _pending = _pending, None
    return kind


def strongest(kinds) -> str | None:
    """The strongest of several requests (STOP over SAVE over None)."""
    return max(kinds, key=lambda k: _PRIORITY[k], default=None)


def code(kind: str | None) -> int:
    """The request as a small integer, for an all-reduce (max) across ranks."""
    return _PRIORITY[kind]


def from_code(value: int) -> str | None:
    return {v: k for k, v in _PRIORITY.items()}[int(value)]


def _handler(signum, frame) -> None:
    request(STOP if signum == signal.SIGTERM else SAVE)


def install_handlers(sigterm: bool = True) -> dict:
    """Route SIGUSR1 (and SIGTERM when asked) to `request`; only possible in the main thread.

    Returns:
        the previous handlers, for `restore_handlers`; empty when not in the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    signals = [signal.SIGUSR1] + ([signal.SIGTERM] if sigterm else [])
    return {s: signal.signal(s, _handler) for s in signals}


def restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


_process_handlers: dict = {}  # what install_process_handlers replaced, for restore_process_handlers


def install_process_handlers(*_) -> bool:
    """`install_handlers` for a process whose training runs in another thread: call it on the main
    thread, e.g. as a Ray actor task (the actor that `__ray_call__` passes first is ignored). The
    previous handlers stay in this module until `restore_process_handlers`. True when installed."""
    if not _process_handlers:
        _process_handlers.update(install_handlers())
    return bool(_process_handlers)


def restore_process_handlers(*_) -> None:
    """Undo `install_process_handlers` (on the main thread)."""
    restore_handlers(_process_handlers)
    _process_handlers.clear()


@contextmanager
def handled_notices():
    """Within the block SIGUSR1 requests a checkpoint and SIGTERM a checkpoint and a stop."""
    previous = install_handlers()
    try:
        yield
    finally:
        restore_handlers(previous)


def stopped_early_message(stage: str, steps: int) -> str:
    """What a launcher prints when a stage ended early on SIGTERM, after its checkpoint."""
    return f"[{stage}] stopped on SIGTERM at step {steps} after a checkpoint; run the same command again to resume"
