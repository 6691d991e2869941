"""Qubes' qrexec daemon, agent and qrexec-client-vm built from the pinned qubes-core-qrexec
with its vchan-over-Unix-sockets backend (BACKEND_VMM=socket, the vchan-socket library of
the lab's QubesDB build), once per cache; as qubesdb_build does, in a scratch copy renamed
into place, so concurrent builders agree on one tree."""

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qubes_lab import qubesdb_build
from qubes_lab.upstream import COMPONENTS, UpstreamUnavailable, cache_root, source_tree

QREXEC = "qubes-core-qrexec"
RECIPE = "1"  # bump when the steps below change what a build holds
STEP_TIMEOUT = 300.0
TARGETS = {"daemon": ("qrexec-daemon",), "agent": ("qrexec-agent", "qrexec-client-vm")}


@dataclass(frozen=True)
class QrexecBuild:
    root: Path

    @property
    def daemon(self) -> Path:
        return self.root / "bin" / "qrexec-daemon"

    @property
    def agent(self) -> Path:
        return self.root / "bin" / "qrexec-agent"

    @property
    def client_vm(self) -> Path:
        return self.root / "bin" / "qrexec-client-vm"

    @property
    def python_dir(self) -> Path:
        """The `qrexec` Python package (policy parser, qrexec-policy-exec) of the same pin."""
        return source_tree(QREXEC)


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise UpstreamUnavailable(f"building qrexec: {' '.join(argv)} ran too long") from None
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise UpstreamUnavailable(f"building qrexec: {' '.join(argv)} failed:\n" + "\n".join(tail))


def _build_into(scratch: Path, final: Path, vchan: qubesdb_build.QubesDBBuild) -> None:
    src = scratch / "src"
    shutil.copytree(source_tree(QREXEC), src, symlinks=True)
    (scratch / "bin").mkdir()
    (scratch / "lib").mkdir()
    pkgconfig = scratch / "pkgconfig"
    pkgconfig.mkdir()
    # The backend's pkg-config name is vchan-socket; the lab's build calls its file vchan.pc.
    shutil.copy2(vchan.root / "pkgconfig" / "vchan.pc", pkgconfig / "vchan-socket.pc")
    shutil.copy2(vchan.root / "pkgconfig" / "vchan.pc", pkgconfig / "vchan.pc")
    env = {**os.environ, "PKG_CONFIG_PATH": str(pkgconfig), "LC_ALL": "C"}
    rpath = f"-L../libqrexec -Wl,-rpath,{final / 'lib'} -Wl,-rpath,{vchan.root / 'lib'}"
    _run(["make", "-C", "libqrexec", "BACKEND_VMM=socket"], src, env)
    for folder, programs in TARGETS.items():
        _run(["make", "-C", folder, "BACKEND_VMM=socket", f"LDFLAGS={rpath}", *programs], src, env)
        for program in programs:
            shutil.copy2(src / folder / program, scratch / "bin")
    for library in (src / "libqrexec").glob("libqrexec-utils.so*"):
        shutil.copy2(library, scratch / "lib", follow_symlinks=False)
    shutil.rmtree(src)
    (scratch / ".built").write_text(RECIPE + "\n")


def build() -> QrexecBuild:
    """The built qrexec (UpstreamUnavailable with the reason when it cannot be built)."""
    vchan = qubesdb_build.build()
    key = hashlib.sha256(
        "\n".join((COMPONENTS[QREXEC].content_sha256, vchan.root.name, RECIPE)).encode()
    ).hexdigest()[:16]
    final = cache_root() / f"build-qrexec-{key}"
    if (final / ".built").is_file():
        return QrexecBuild(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=final.parent))
    try:
        _build_into(scratch, final, vchan)
        try:
            scratch.rename(final)
        except OSError:  # another builder finished first; its tree is the same build
            if not (final / ".built").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return QrexecBuild(final)
