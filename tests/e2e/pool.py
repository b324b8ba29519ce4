"""The test servers of a run: each distinct server (``ServerSpec``) starts once, ahead of the tests that need it, and
stops once no test still to run needs it.

At collection (``plan``) the pool reads from each selected test's fixtures which servers it needs, in the order the
tests run. ``STARTERS`` threads boot them in that order while earlier tests run, with at most ``MAX_LIVE``
servers up (or stopping) at once (``MAX_LIVE_ROOMY`` while memory allows): the session's default server boots while
the unit tests run, and each other server while the tests before it run. A restart's second life (``after``) boots
once the first's ``bentoml serve`` has exited. ``get`` waits for a server; ``release``
(after each test) stops the servers no later test needs, each in a thread of its own while the next tests run, and
checks how they stopped: a spec's ``settle`` first (what must hold before the stop), then nothing left for SIGKILL,
and for the default server a stop within 60 s and no line of the shutdown watchdog. A stop's problems fail the
teardown of the test during which it ended (the last test's teardown waits for every stop). A run with no e2e test
selected starts nothing.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from openai_routes.server.lifecycle import WATCHDOG_EXIT
from tests.e2e.server import Server, free_port, store_url

STARTERS = 2  # boots at once: a boot is mostly imports on one core, and tests leave CPU idle while they wait
MAX_LIVE = 3  # servers up (or starting) at once: the default one, the one in use, the next one...
MAX_LIVE_ROOMY = 4  # ... and one more while the machine has room to spare for it (a server takes up to ~6 GB)
ROOM = 10 * 2**30  # available memory (bytes) that counts as room to spare
STOP_WITHIN = 60  # seconds, for the servers stopped by the pool (a test's own SIGTERM is the test's business)


@dataclass(frozen=True)
class ServerSpec:
    """One server the tests need: its config, its environment, and the fixtures through which tests use it."""

    name: str
    fixtures: tuple[str, ...]  # a test that uses one of these fixtures (even indirectly) needs this server
    config: str = "configs/default.yaml"
    build: Callable[[ServerPool, Server], None] | None = None  # prepares the server (its config, target) at boot
    env: Callable[[ServerPool, Path], dict[str, str]] | None = None  # extra environment, given the server's directory
    settle: Callable[[Server], None] | None = None  # waits for (and asserts) what must hold before its stop
    key_group: str = ""  # servers of one group share their API keys (a store's records belong to a key)
    after: str = ""  # a restart: boots only once this server's `bentoml serve` has exited (it reads what that left)
    check_watchdog: bool = False  # at its stop: within STOP_WITHIN and no watchdog line in its log
    hosts: tuple[str, ...] = ()  # /etc/hosts lines of its own (``Server.hosts``: a mount namespace, root only)


def specs_of(item: pytest.Item, specs: Iterable[ServerSpec]) -> set[str]:
    """The names of the servers ``item`` needs (its fixture closure names one of their fixtures)."""
    names = set(getattr(item, "fixturenames", ()))
    return {spec.name for spec in specs if names & set(spec.fixtures)}


@dataclass
class Started:
    spec: ServerSpec
    server: Server
    ready: Future[Server] = field(default_factory=Future)
    stopped: bool = False  # its stop has begun
    stopping: Future[list[str]] | None = None  # the stop's problems, once it is over
    reported: bool = False

    @property
    def live(self) -> bool:
        """Up, starting or still stopping: it holds memory."""
        return self.stopping is None or not self.stopping.done()


class ServerPool:
    def __init__(self, specs: Iterable[ServerSpec], announce: Callable[[str], None] = print) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.announce = announce
        self.notes: queue.SimpleQueue[str] = queue.SimpleQueue()  # the starter's progress lines, for the main thread
        self.directory = Path(tempfile.mkdtemp(prefix="bento-oai-servers-"))
        self.needs: list[set[str]] = []  # per planned test, in run order: the specs it needs
        self.index: dict[str, int] = {}  # nodeid -> position in the plan
        self.position = 0
        self.started: dict[str, Started] = {}
        self.keys: dict[str, tuple[str, str]] = {}
        self.resources: dict[str, Any] = {}
        self.resource_locks: dict[str, threading.Lock] = {}
        self.closers: list[Callable[[], object]] = []
        self.lock = threading.RLock()
        self.boots: queue.Queue[Started | None] = queue.Queue()
        for number in range(STARTERS):
            threading.Thread(target=self._boot_in_order, name=f"server-pool-{number}", daemon=True).start()

    # --- planning and scheduling ---------------------------------------------------------------------------

    def plan(self, items: list[pytest.Item]) -> None:
        self.needs = [self.specs_of(item) for item in items]
        self.index = {item.nodeid: position for position, item in enumerate(items)}
        if any(self.needs):
            self.announce(f"servers for this run, in order: {self.order(0)}; logs under {self.directory}")

    def specs_of(self, item: pytest.Item) -> set[str]:
        return specs_of(item, self.specs.values())

    def order(self, start: int) -> list[str]:
        """The specs needed from test ``start`` on, by first use."""
        return list(dict.fromkeys(name for needs in self.needs[start:] for name in sorted(needs)))

    def schedule(self) -> None:
        """Queue the next servers to boot, in order of first use."""
        with self.lock:
            live = [name for name, started in self.started.items() if started.live]
            for name in self.order(self.position):
                if name in self.started or not self.may_boot(name):
                    continue
                if len(live) >= (MAX_LIVE_ROOMY if psutil.virtual_memory().available > ROOM else MAX_LIVE):
                    return
                self.launch(name)
                live.append(name)

    def may_boot(self, name: str) -> bool:
        """A restart's second life waits for the first to have exited (``get`` then launches it at once)."""
        after = self.specs[name].after
        if not after:
            return True
        first = self.started.get(after)
        return first is not None and first.server.process is not None and first.server.process.poll() is not None

    # --- starting --------------------------------------------------------------------------------------------

    def key(self, group: str) -> tuple[str, str]:
        with self.lock:
            return self.keys.setdefault(
                group, (f"sk-test-{secrets.token_hex(16)}", f"sk-test-other-{secrets.token_hex(16)}")
            )

    def launch(self, name: str) -> Started:
        with self.lock:
            if name in self.started:
                return self.started[name]
            spec = self.specs[name]
            key, other = self.key(spec.key_group or name)
            directory = self.directory / name
            directory.mkdir()
            env = {"BENTO_OAI_STORE_URL": store_url(directory), "BENTO_OAI_API_KEYS": f"{key},{other}"}
            server = Server(
                port=free_port(), api_key=key, log_path=directory / "serve.log", announce=self.note,
                config=spec.config, extra_env=env, hosts=spec.hosts,
            )  # fmt: skip
            started = self.started[name] = Started(spec, server)
            self.boots.put(started)
            return started

    def _boot_in_order(self) -> None:
        while (started := self.boots.get()) is not None:
            spec = started.spec
            try:
                directory = started.server.log_path.parent
                if spec.build is not None:
                    spec.build(self, started.server)
                if spec.env is not None:
                    started.server.extra_env.update(spec.env(self, directory))
                with self.lock:  # never after its stop: a server launched once the run ended would outlive it
                    if started.stopped:
                        raise RuntimeError(f"{spec.name}: the run ended before its boot")
                    started.server.launch()
                started.server.wait_ready()
            except BaseException as exc:
                started.ready.set_exception(exc)
            else:
                started.ready.set_result(started.server)

    def get(self, name: str) -> Server:
        """The server of ``name``, once ready (booted now if it was not planned, e.g. a fixture used directly)."""
        started = self.launch(name)
        while True:
            with contextlib.suppress(TimeoutError):
                server = started.ready.result(timeout=5)
                self.flush_notes()
                return server
            self.flush_notes()

    def note(self, line: str) -> None:
        """A progress line: written now from the main thread, later (``flush_notes``) from a starter's: only the
        main thread may suspend pytest's capture."""
        if threading.current_thread() is threading.main_thread():
            self.announce(line)
        else:
            self.notes.put(line)

    def flush_notes(self) -> None:
        while True:
            try:
                self.announce(self.notes.get_nowait())
            except queue.Empty:
                return

    def resource(self, name: str, create: Callable[[], Any], close: Callable[[Any], object]) -> Any:
        """A resource the servers share (a database server), created once and closed with the pool."""
        with self.lock:
            guard = self.resource_locks.setdefault(name, threading.Lock())
        with guard:  # not the pool's lock: creating may take a while (a Bento build), tests go on meanwhile
            if name not in self.resources:
                value = create()
                with self.lock:
                    self.resources[name] = value
                    self.closers.append(lambda: close(value))
            return self.resources[name]

    # --- stopping --------------------------------------------------------------------------------------------

    def release(self, nodeid: str) -> None:
        """After the test ``nodeid``: stop the servers no later test needs, in the background; raise what went
        wrong with the stops that have ended (all of them, after the last test)."""
        self.position = self.index.get(nodeid, self.position - 1) + 1
        still_needed = set().union(*self.needs[self.position :])
        for name, started in list(self.started.items()):
            if not started.stopped and name not in still_needed:
                self.stop_in_background(started)
        problems = self.ended_stops(wait=self.position >= len(self.needs))
        self.schedule()
        self.flush_notes()
        assert not problems, "\n".join(problems)

    def stop_in_background(self, started: Started) -> None:
        with self.lock:
            started.stopped = True
            stopping = started.stopping = Future()

        def run() -> None:
            try:
                stopping.set_result(self.stop(started))
            except BaseException as exc:
                stopping.set_result([f"{started.spec.name}: its stop failed: {exc!r}"])
            self.schedule()  # its memory is free: the next server may boot

        threading.Thread(target=run, name=f"stop-{started.spec.name}", daemon=True).start()

    def ended_stops(self, wait: bool) -> list[str]:
        """The problems of the stops that have ended and were not reported yet (``wait``: of every stop)."""
        problems = []
        for started in list(self.started.values()):
            if started.stopping is not None and not started.reported and (wait or started.stopping.done()):
                problems += started.stopping.result()
                started.reported = True
        return problems

    def stop(self, started: Started) -> list[str]:
        """Settle, stop and check one server (see the module docstring)."""
        server, spec, name = started.server, started.spec, started.spec.name
        if server.process is None:  # never launched: its boot failed before bentoml serve ran
            return []
        problems = []
        if spec.settle is not None and server.process.poll() is None:
            try:
                spec.settle(server)
            except Exception as exc:
                problems.append(f"{name}: before its stop: {exc}")
        seconds = server.stop()
        if server.killed:
            problems.append(f"{name}: processes left running after SIGTERM: {server.killed}")
        if spec.check_watchdog:
            if seconds >= STOP_WITHIN:
                problems.append(f"{name}: the server took {seconds:.0f} s to stop")
            # A request its client left unanswered must not hold the shutdown until the watchdog ends it
            # (lifecycle.start_watchdog logs this line, then exits).
            if WATCHDOG_EXIT in server.log_path.read_text(errors="replace"):
                problems.append(f"{name}: the shutdown watchdog fired:\n{server.log_tail()}")
        return problems

    def close(self) -> None:
        """At the end of the session: stop whatever still runs (an interrupted run), wait for every stop, then close
        the shared resources."""
        for _ in range(STARTERS):
            self.boots.put(None)
        for started in list(self.started.values()):
            if not started.stopped:
                self.stop_in_background(started)
        for started in list(self.started.values()):
            if started.stopping is not None:
                with contextlib.suppress(Exception):
                    started.stopping.result(timeout=300)
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                closer()
