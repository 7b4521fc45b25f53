"""Fake wall clock for fault tests: put this directory on PYTHONPATH.

``time.time()`` / ``time.time_ns()`` return the real wall clock plus an offset in seconds
read from the file named by ``IDSTORE_FAKE_CLOCK_FILE`` (polled every 50 ms by a daemon
thread, so the test can make the clock jump at any moment by writing e.g. ``3600``).
``time.monotonic()`` is left alone: code that times only on it must not notice.

Only Python's view of the wall clock moves, not the C library's. grpc's Python layer
turns a call's timeout into an absolute deadline with ``time.time()`` that its C core then
compares with the real clock; on a real clock step both move together, so here grpc's
deadline helper is pointed at the real clock to keep the two consistent (without this,
every etcd call fails at once with DEADLINE_EXCEEDED after a backward jump: an artefact
of faking one clock, not something a real step does to calls started after it).
"""

from __future__ import annotations

import os
import threading
import time

_path = os.environ.get("IDSTORE_FAKE_CLOCK_FILE")
if _path:
    _real_time, _real_time_ns = time.time, time.time_ns
    _offset = [0.0]

    def _fake_time() -> float:
        return _real_time() + _offset[0]

    def _fake_time_ns() -> int:
        return _real_time_ns() + int(_offset[0] * 1e9)

    def _poll(path: str) -> None:
        while True:
            try:
                with open(path) as f:
                    _offset[0] = float(f.read().strip() or 0)
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    time.time = _fake_time
    time.time_ns = _fake_time_ns
    try:
        import grpc._channel

        def _real_deadline(timeout: float | None) -> float | None:
            return None if timeout is None else _real_time() + timeout

        grpc._channel._deadline = _real_deadline
    except ImportError:
        pass
    threading.Thread(target=_poll, args=(_path,), name="fake-clock", daemon=True).start()
