"""Real QubesDB daemons over vchan-socket: dom0's side and each qube's, as on a Qubes host.

Dom0 has one mount namespace for its daemons (`/var/run/qubes/qubesdb.<name>.sock`) and for
whatever talks to them "from dom0"; each qube has its own, where its daemon serves
`/var/run/qubes/qubesdb.sock` and which a lab qube's processes join. The two daemons of a
qube meet over vchan sockets in a folder of the work dir. Everything started here lives in
those namespaces, so stopping a namespace ends its processes and mounts.
"""

import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .mount_sandbox import MountSandbox, SandboxError
from .qubesdb_build import QubesDBBuild, build
from .upstream import UpstreamUnavailable

FRESH_DIRS = ("/var/run/qubes", "/var/log/qubes")
DAEMON_TIMEOUT = 30.0  # the daemon's launcher returns once it serves (qube side: synced)
SOCKET_TIMEOUT = 10.0
RUN_TIMEOUT = 60.0
POLL = 0.02
T = TypeVar("T")

__all__ = ["QubeSide", "RealQubesDB", "SandboxError", "UpstreamUnavailable"]


@dataclass(frozen=True)
class QubeSide:
    """One qube's QubesDB: its daemon's namespace, the lab netns it runs with, its domid."""

    name: str
    domid: int
    sandbox: MountSandbox
    netns: str | None
    env: Mapping[str, str]

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` as a process of this qube (its mount namespace, its lab netns if any)."""
        return self.sandbox.command(argv, netns=self.netns)

    def run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return _run(self.command(argv), self.env, kwargs)

    def open(self) -> Any:
        """This qube's own `qubesdb.QubesDB()`, opened in this process (the real binding)."""
        qubesdb = _binding(self.env)
        return self.sandbox.call_inside(qubesdb.QubesDB)

    def call_inside(self, make: Callable[[], T]) -> T:
        """`make()` as this qube would run it (e.g. an adapter over `qubesdb.QubesDB()`)."""
        _binding(self.env)
        return self.sandbox.call_inside(make)

    @property
    def join_mount(self) -> str:
        """The `nsenter --mount=` value that puts a process beside this qube's QubesDB."""
        return f"/proc/{self.sandbox.holder_pid}/ns/mnt"


@dataclass(frozen=True)
class RealQubesDB:
    """Dom0's QubesDB side and the qubes started so far (`add_qube`); `stop()` ends all."""

    build: QubesDBBuild
    workdir: Path
    dom0: MountSandbox
    qubes: dict[str, QubeSide] = field(default_factory=dict)

    @classmethod
    def start(cls, workdir: Path) -> "RealQubesDB":
        """Build (once) and start dom0's namespace; UpstreamUnavailable without the sources."""
        built = build()
        workdir.mkdir(parents=True, exist_ok=True)
        dom0 = MountSandbox.start(workdir / "stash-dom0", FRESH_DIRS)
        return cls(built, workdir, dom0)

    @property
    def vchan_dir(self) -> Path:
        return self.workdir / "vchan"

    def env(self, domid: int) -> dict[str, str]:
        """Environment of a process of domain `domid`: the build's tools, `import qubesdb`."""
        path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        python_path = [str(self.build.python_dir)]
        if os.environ.get("PYTHONPATH"):
            python_path.append(os.environ["PYTHONPATH"])
        return {
            **os.environ,
            "PATH": f"{self.build.bin_dir}:{path}",
            "PYTHONPATH": ":".join(python_path),
            "VCHAN_DOMAIN": str(domid),
            "VCHAN_SOCKET_DIR": str(self.vchan_dir),
        }

    def dom0_command(self, argv: Sequence[str]) -> list[str]:
        return self.dom0.command(argv)

    def run_dom0(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run `argv` in dom0's namespace (text mode, bounded); `QubesDB(name)` works there."""
        return _run(self.dom0_command(argv), self.env(0), kwargs)

    def run_qube(
        self, name: str, argv: Sequence[str], **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in qube `name`'s namespace; `QubesDB()` is that qube's own DB there."""
        return self.qubes[name].run(argv, **kwargs)

    def call_in_dom0(self, make: Callable[[], T]) -> T:
        """`make()` as dom0 would run it (e.g. an adapter over `qubesdb.QubesDB(name)`)."""
        _binding(self.env(0))
        return self.dom0.call_inside(make)

    def open_dom0(self, name: str) -> Any:
        """Dom0's `qubesdb.QubesDB(name)` for qube `name`, opened in this process."""
        qubesdb = _binding(self.env(0))
        return self.dom0.call_inside(lambda: qubesdb.QubesDB(name))

    def add_qube(self, name: str, domid: int, *, netns: str | None = None) -> QubeSide:
        """Start dom0's daemon for `name` and the qube's own, connected; wait until both serve."""
        if name in self.qubes or any(q.domid == domid for q in self.qubes.values()):
            raise ValueError(f"qube {name!r} or domid {domid} already has a QubesDB here")
        if not (0 < domid < 32752):  # Xen's domid range, without dom0
            raise ValueError(f"domid {domid}: must be between 1 and 32751")
        self.vchan_dir.mkdir(exist_ok=True)
        daemon = str(self.build.daemon)
        _start_daemon(self.dom0, self.env(0), [daemon, str(domid), name])
        _wait_for(self.dom0, f"/run/qubes/qubesdb.{name}.sock")
        sandbox = MountSandbox.start(self.workdir / f"stash-{name}", FRESH_DIRS)
        try:
            _start_daemon(sandbox, self.env(domid), [daemon, "0"])
            _wait_for(sandbox, "/run/qubes/qubesdb.sock")
        except BaseException:
            sandbox.stop()
            raise
        side = QubeSide(name, domid, sandbox, netns, self.env(domid))
        self.qubes[name] = side
        return side

    def pids(self) -> list[int]:
        """Every process in dom0's and the qubes' namespaces (daemons, holders, commands)."""
        found = self.dom0.pids()
        for side in self.qubes.values():
            found += side.sandbox.pids()
        return sorted(found)

    def stop(self) -> None:
        """End every namespace (their processes and mounts) and remove the vchan sockets."""
        for side in list(self.qubes.values()):
            side.sandbox.stop()
        self.qubes.clear()
        self.dom0.stop()
        shutil.rmtree(self.vchan_dir, ignore_errors=True)
        for stash in self.workdir.glob("stash-*"):
            shutil.rmtree(stash, ignore_errors=True)


def _binding(env: Mapping[str, str]) -> Any:
    # The build's module for this interpreter; its path goes first so no other qubesdb wins.
    folder = env["PYTHONPATH"].split(":")[0]
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("qubesdb")


def _run(
    argv: list[str], env: Mapping[str, str], kwargs: Mapping[str, object]
) -> subprocess.CompletedProcess[str]:
    options: dict[str, object] = {
        "capture_output": True, "text": True, "timeout": RUN_TIMEOUT, **kwargs
    }  # fmt: skip
    return subprocess.run(argv, env=dict(env), **options)  # type: ignore[call-overload, no-any-return]


def _start_daemon(sandbox: MountSandbox, env: Mapping[str, str], argv: list[str]) -> None:
    # qubesdb-daemon forks; its first process exits 0 once the daemon serves (a qube's after
    # its first full sync from dom0), or 1 with the reason in /var/log/qubes/.
    try:
        done = _run(sandbox.command(argv), env, {"timeout": DAEMON_TIMEOUT})
    except subprocess.TimeoutExpired:
        raise SandboxError(f"{' '.join(argv)}: not serving within {DAEMON_TIMEOUT} s") from None
    if done.returncode != 0:
        logs = sorted(sandbox.path("/var/log/qubes").glob("qubesdb.*.log"))
        text = "".join(log.read_text(errors="replace")[-2000:] for log in logs)
        raise SandboxError(f"{' '.join(argv)} failed ({done.stderr.strip()}): {text.strip()}")


def _wait_for(sandbox: MountSandbox, inside: str) -> None:
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while not sandbox.path(inside).exists():
        if time.monotonic() > deadline:
            raise SandboxError(f"{inside} did not appear within {SOCKET_TIMEOUT} s")
        time.sleep(POLL)
