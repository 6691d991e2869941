"""A private mount and PID namespace in which fixed paths (e.g. /run/qubes) are fresh and empty.

Programs with hard-coded paths (QubesDB's sockets under /var/run/qubes, its log under
/var/log/qubes) run here side by side, one namespace per emulated domain. The host's own
folders are never written: where a wanted folder does not exist on the host, its parent is
covered inside the namespace by a tmpfs holding binds of the parent's entries plus the new
empty folder. Propagation is slave: the host's later mounts (new `ip netns`) show inside,
nothing made inside shows on the host. The namespace's first process (the holder) lives as
long as its stdin stays open; when it ends, the kernel kills everything in the namespace.
"""

import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
MOUNT_TIMEOUT = 10.0
REAP_INTERVAL = 0.5
CALL_TIMEOUT = 30.0
CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
T = TypeVar("T")


class SandboxError(RuntimeError):
    """The namespace could not be made (no root, no unshare) or did not come up in time."""


def namespace_inode(pid: int, kind: str) -> int | None:
    """The inode of `/proc/<pid>/ns/<kind>`, None once the process is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def pids_in_namespace(kind: str, inode: int) -> list[int]:
    """Every live process whose `kind` namespace is `inode`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and namespace_inode(int(entry), kind) == inode:
            found.append(int(entry))
    return sorted(found)


@dataclass(frozen=True)
class MountSandbox:
    """One running namespace: `unshare` (our child) and the holder (its child, PID 1 inside)."""

    unshare: subprocess.Popen[bytes]
    holder_pid: int
    stash: Path

    @classmethod
    def start(cls, stash: Path, fresh_dirs: Sequence[str]) -> "MountSandbox":
        """Start a namespace where each of `fresh_dirs` is an empty folder (stash: our scratch)."""
        stash.mkdir(parents=True, exist_ok=True)
        argv = [
            "unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "slave",
            sys.executable, "-m", "qubes_lab.mount_sandbox", str(stash), *fresh_dirs,
        ]  # fmt: skip
        try:
            unshare = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as err:
            raise SandboxError(f"cannot run unshare: {err}") from None
        ready, _, _ = select.select([unshare.stdout], [], [], START_TIMEOUT)
        line = unshare.stdout.readline() if ready and unshare.stdout else b""
        holder = _only_child(unshare.pid)
        if line.strip() != b"ready" or holder is None:
            unshare.kill()
            _, err = unshare.communicate(timeout=STOP_TIMEOUT)
            raise SandboxError(
                f"mount namespace for {list(fresh_dirs)} did not come up: "
                + (err.decode(errors="replace").strip() or "no answer in time")
            )
        return cls(unshare, holder, stash)

    def command(
        self, argv: Sequence[str], *, netns: str | None = None, cwd: str | None = None
    ) -> list[str]:
        """`argv` run inside this namespace (and in lab netns `netns`, if given)."""
        prefix = [
            "nsenter",
            f"--mount=/proc/{self.holder_pid}/ns/mnt",
            f"--pid=/proc/{self.holder_pid}/ns/pid",
        ]
        if netns is not None:
            prefix.append(f"--net=/run/netns/{netns}")
        if cwd is not None:
            prefix.append(f"--wd={cwd}")
        return [*prefix, "--", *argv]

    def path(self, inside: str) -> Path:
        """Where a path as seen inside the namespace can be read from the host."""
        return Path(f"/proc/{self.holder_pid}/root") / inside.lstrip("/")

    def call_inside(self, make: Callable[[], T]) -> T:
        """`make()` run on a thread that entered this mount namespace; what it opens stays ours.

        A socket connected there by a fixed path (QubesDB's) keeps working in this process.
        Only that thread moves (its own fs state first, so other threads are untouched).
        """
        outcome: list[T] = []
        failure: list[BaseException] = []

        def inside() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                namespace = os.open(f"/proc/{self.holder_pid}/ns/mnt", os.O_RDONLY)
                try:
                    if libc.unshare(CLONE_FS) != 0 or libc.setns(namespace, CLONE_NEWNS) != 0:
                        number = ctypes.get_errno()
                        raise OSError(number, f"entering the namespace: {os.strerror(number)}")
                finally:
                    os.close(namespace)
                outcome.append(make())
            except BaseException as err:  # handed to the caller below
                failure.append(err)

        thread = threading.Thread(target=inside, name="mount-sandbox-call", daemon=True)
        thread.start()
        thread.join(CALL_TIMEOUT)
        if failure:
            raise failure[0]
        if not outcome:
            raise SandboxError(f"call inside the namespace gave no answer in {CALL_TIMEOUT} s")
        return outcome[0]

    def pids(self) -> list[int]:
        """The processes inside (the holder included)."""
        inode = namespace_inode(self.holder_pid, "pid")
        return [] if inode is None else pids_in_namespace("pid", inode)

    def stop(self) -> None:
        """End the namespace: everything in it is killed, its mounts go with it."""
        if self.unshare.stdin is not None and not self.unshare.stdin.closed:
            self.unshare.stdin.close()  # the holder's cue to exit
        try:
            self.unshare.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.unshare.kill()  # --kill-child takes the holder with it
            self.unshare.wait(timeout=STOP_TIMEOUT)
        for stream in (self.unshare.stdout, self.unshare.stderr):
            if stream is not None:
                stream.close()


def _only_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(children[0]) if len(children) == 1 else None


# ---- inside the namespace (the holder) ----


def _mount(*args: str) -> None:
    # -n: no record in /run/mount/utab, which would land on the host's /run.
    subprocess.run(["mount", "-n", *args], check=True, timeout=MOUNT_TIMEOUT)


def _cover_with_entries(parent: Path, stash: Path) -> None:
    """Put a tmpfs on `parent` that still shows each of the host's entries there."""
    stash.mkdir(parents=True, exist_ok=True)
    _mount("--rbind", str(parent), str(stash))
    mode = parent.stat().st_mode & 0o7777
    _mount("-t", "tmpfs", "-o", f"mode={mode:o}", "tmpfs", str(parent))
    for entry in sorted(os.listdir(stash)):
        source, target = stash / entry, parent / entry
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_dir():
            target.mkdir(exist_ok=True)
            _mount("--rbind", str(source), str(target))
        else:
            target.touch()
            _mount("--bind", str(source), str(target))
    subprocess.run(["umount", "--lazy", str(stash)], check=True, timeout=MOUNT_TIMEOUT)


def _make_fresh(wanted: Path, stash: Path) -> None:
    wanted = Path(os.path.realpath(wanted))
    if wanted.is_dir():
        _mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", str(wanted))
        return
    # Create the folder on a private tmpfs over its parent, never in the host's tree.
    _cover_with_entries(wanted.parent, stash)
    wanted.mkdir(mode=0o755)


def _hold() -> None:
    """Reap the namespace's orphans until our parent closes stdin (or dies)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        readable, _, _ = select.select([0], [], [], REAP_INTERVAL)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if readable and not os.read(0, 4096):
            return


def main(argv: Sequence[str]) -> int:
    stash = Path(argv[0])
    for index, wanted in enumerate(argv[1:]):
        _make_fresh(Path(wanted), stash / str(index))
    print("ready", flush=True)
    _hold()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
