"""Start and stop a real ``bentoml serve`` of this repository for the end-to-end tests.

``bentoml serve`` renames itself ``circusd`` and runs each worker in its own process group, and a worker owns
the vLLM engine processes. So stopping means: remember the whole process tree, SIGTERM the arbiter and wait
(engines take seconds to shut down), SIGKILL whatever is left, and check that the port is free again.

Each server gets a BentoML home of its own (``bentoml_home``): a starting server empties
``$BENTOML_HOME/prometheus_multiproc_dir``, so servers sharing the user's home would wipe each other's counters.
The home links the user's model and Bento stores and dtype decisions, so the same models (and built Bentos) are
served as the user's.

A server may resolve names of its own (``hosts``, as root): it then runs in a mount namespace of its own whose
``/etc/hosts`` is the machine's plus those lines (``with_hosts``), so made-up names reach test servers while the
machine's own file, and every other process, are untouched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
BENTOML = Path(sys.executable).parent / "bentoml"
# vLLM's own CPU binding (one engine thread, one core left to the rest) instead of the both-cores lever
# (engines/cpu_levers.py), which assumes one server per machine: during the suite several servers boot and serve on
# the same 2 cores, and engines whose OpenMP threads are pinned to both cores wait on each other at every barrier
# (measured: the Agents SDK's function-tool test took 67 s instead of 18 s, the whole suite 14m18 instead of ~12).
SHARED_CPU_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "auto", "VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}
PORT_TRIES = 3  # launches of one server, when its port was taken meanwhile (wait_ready)
USER_BENTOML_HOME = Path(os.path.expandvars(os.environ.get("BENTOML_HOME", "~/bentoml"))).expanduser()  # as BentoML


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def store_url(directory: Path) -> str:
    """A response store of its own in ``directory`` (SQLite), so that no test server writes into the source tree."""
    return f"sqlite+aiosqlite:///{directory / 'responses.db'}"


def bentoml_home(directory: Path) -> Path:
    """A BentoML home in ``directory`` whose ``models``, ``bentos`` and ``bento-oai`` (the ``dtype: auto`` decisions
    ``make models`` recorded) are the user's (linked, not copied)."""
    home = directory / "bentoml-home"
    home.mkdir(parents=True, exist_ok=True)
    for store in ("models", "bentos", "bento-oai"):
        link = home / store
        if not link.is_symlink():
            (USER_BENTOML_HOME / store).mkdir(parents=True, exist_ok=True)
            link.symlink_to(USER_BENTOML_HOME / store, target_is_directory=True)
    return home


def with_hosts(command: list[str], hosts: tuple[str, ...], directory: Path) -> list[str]:
    """``command`` in a private mount namespace whose ``/etc/hosts`` (bind-mounted) is the machine's plus ``hosts``
    (lines like ``45.33.32.156 images.example.com``). ``unshare`` and then ``sh`` exec into ``command``, so the
    process started is the server itself: its tree, its signals and its stop are those of a plain launch."""
    if os.geteuid() != 0:
        raise RuntimeError("a server with hosts of its own needs root (unshare --mount, mount --bind)")
    path = directory / "hosts"
    path.write_text(Path("/etc/hosts").read_text().rstrip("\n") + "\n" + "".join(f"{line}\n" for line in hosts))
    script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(path), *command]


def port_is_free(port: int) -> bool:
    """True when a server could bind the port (as uvicorn does, with SO_REUSEADDR: TIME_WAIT is fine)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def still_alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (zombies count as gone: they hold nothing)."""
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def process_tree(process: subprocess.Popen[bytes] | None) -> list[psutil.Process]:
    """``process`` and all its descendants, as they are now."""
    if process is None:
        return []
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def terminate_tree(process: subprocess.Popen[bytes], processes: list[psutil.Process], grace: float) -> list[str]:
    """SIGTERM ``process``, wait up to ``grace`` for all ``processes``, SIGKILL the rest; return what was killed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace)
    killed = []
    for leftover in still_alive(alive):
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
            killed.append(f"{leftover.pid} {leftover.name()}")
    psutil.wait_procs(alive, timeout=10)
    process.wait(timeout=10)
    return killed


def wait_port_free(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not port_is_free(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still busy after stopping the server")
        time.sleep(0.5)


@dataclass
class Server:
    port: int
    api_key: str
    log_path: Path
    config: str = "configs/default.yaml"
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    target: str = "service:BentoOAI"  # or a built Bento's tag (its build-time config then wins over ``config``)
    host: str = "127.0.0.1"
    hosts: tuple[str, ...] = ()  # /etc/hosts lines of its own (with_hosts; root only)
    cwd: Path = ROOT  # a Bento needs no source tree: serve it from elsewhere to prove it
    announce: Callable[[str], None] = print  # progress lines: engine start is long, never a silent terminal
    started_tree: list[psutil.Process] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    launched: float = 0
    notes: dict[str, Any] = field(default_factory=dict)  # what a test leaves for its spec's settle check

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 600) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start ``bentoml serve`` (in a BentoML home of its own, beside the log) without waiting for it."""
        home = bentoml_home(self.log_path.parent)
        env = {**os.environ, **SHARED_CPU_ENV, "BENTO_OAI_API_KEYS": self.api_key, "BENTOML_HOME": str(home)}
        env.update(self.extra_env)
        command = [
            str(BENTOML),
            "serve",
            self.target,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--arg",
            f"config={self.config}",
        ]
        if self.hosts:
            command = with_hosts(command, self.hosts, self.log_path.parent)
        self.announce(
            f"starting `bentoml serve {self.target}` ({self.config}) on port {self.port}; engines take ~1 min"
        )
        self.launched = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 600) -> None:
        """Until ``/readyz`` answers 200. A port taken since ``free_port`` chose it (by another program's server, or
        an engine's own sockets) gets the server a new one, up to ``PORT_TRIES`` times."""
        deadline = self.launched + timeout
        tries = 1
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                if tries < PORT_TRIES and "Address already in use" in self.log_tail(10):
                    tries += 1
                    self.port = free_port()
                    self.launch()
                    continue
                raise RuntimeError(f"bentoml serve exited early; log tail:\n{self.log_tail()}")
            if self.is_ready():
                break
            time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError(f"server not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}")
        if not self.started_tree:
            self.started_tree = self.tree()
            self.announce(f"server on port {self.port} ready in {time.monotonic() - self.launched:.0f} s")

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def tree(self) -> list[psutil.Process]:
        return process_tree(self.process)

    def stop(self, grace: float = 90) -> float:
        """SIGTERM the arbiter, wait for the whole tree, SIGKILL leftovers; return the seconds it took.

        The tree is the one seen at start plus the current one: an engine process orphaned meanwhile (its
        EngineCore gone first) has left the current tree but must not survive. What needed SIGKILL is kept in
        ``killed`` for the fixtures to assert on.
        """
        started = time.monotonic()
        if self.process is not None:
            processes = list({p.pid: p for p in [*self.started_tree, *self.tree()]}.values())
            self.killed += terminate_tree(self.process, processes, grace)
        elapsed = time.monotonic() - started
        wait_port_free(self.port)
        return elapsed

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
