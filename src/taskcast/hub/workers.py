"""``taskcast hub --workers N``: N hub processes on one port (``SO_REUSEPORT``).

One hub process is one Python thread on one core and holds at most what its open-files
limit allows; several share the listening port and the kernel spreads new connections
over them. They are nodes of one cluster-mode log (``--store nats://…``): every worker
fans out every event, so a client may land on any of them. The supervisor reserves the
port (bound, never listening: it takes no connections), starts the workers, passes
SIGINT/SIGTERM on, and restarts a worker that dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("taskcast.hub")

READY_PREFIX = "taskcast hub listening on "
START_TIMEOUT_SECONDS = 60.0
RESTART_DELAY_SECONDS = 1.0
PR_SET_PDEATHSIG = 1


class WorkerFailed(RuntimeError):
    """A worker did not start (its own error is in the supervisor's stderr)."""


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT: port 0 becomes a real port the workers share,
    and nobody else can take it meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart on the same port
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_argv(argv: list[str], port: int) -> list[str]:
    """The hub's own command line for one worker: without ``--workers``, on ``port``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [*out, "--port", str(port), "--reuse-port"]


# Resolved here, in the supervisor: between fork and exec only the call itself may run.
_LIBC = ctypes.CDLL(None, use_errno=True)  # this process's symbols, libc's prctl among them


def _die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies, even by kill -9
    (Linux ``PR_SET_PDEATHSIG``), so no worker outlives it holding the port."""
    with contextlib.suppress(AttributeError):
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    def __init__(self, argv: list[str], workers: int, host: str, port: int) -> None:
        self.count = workers
        self.reserved = reserve_port(host, port)
        self.port = self.reserved.getsockname()[1]
        self.argv = [sys.executable, "-m", "taskcast", *worker_argv(argv, self.port)]
        self.procs: list[subprocess.Popen[str] | None] = [None] * workers
        self.stopping = threading.Event()
        self.url = ""

    def _spawn(self, index: int) -> str:
        """Start worker ``index``; its announced URL once it listens."""
        proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
        )
        self.procs[index] = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(READY_PREFIX):
                # Keep draining its stdout so it never blocks on a full pipe.
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                return line[len(READY_PREFIX) :].split()[0]
        proc.kill()
        raise WorkerFailed(f"worker {index} did not start (exit {proc.wait()})")

    def run(self, ready: Callable[[str], None]) -> int:
        previous = {
            sig: signal.signal(sig, lambda *_: self.stopping.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for index in range(self.count):
                self.url = self._spawn(index)
            log.info("%d workers on port %d", self.count, self.port)
            ready(self.url)
            while not self.stopping.wait(0.2):
                for index, proc in enumerate(self.procs):
                    if proc is not None and proc.poll() is not None and not self.stopping.is_set():
                        log.warning(
                            "worker %d (pid %d) exited with %s; restarting",
                            index,
                            proc.pid,
                            proc.returncode,
                        )
                        time.sleep(RESTART_DELAY_SECONDS)
                        with contextlib.suppress(WorkerFailed):
                            self._spawn(index)
            return self._stop()
        except WorkerFailed:
            self._stop()
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.reserved.close()

    def _stop(self) -> int:
        """SIGTERM every worker (each shuts down gracefully), then wait for all."""
        running = [proc for proc in self.procs if proc is not None]
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in running:
            try:
                codes.append(proc.wait(30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return max((code for code in codes if code > 0), default=0)
