"""Real QubesDB built from the pinned sources: vchan-socket, qubesdb's daemon, client and binding.

The verified source trees stay untouched: each build copies them into a scratch folder under
the upstream cache, builds there and renames the result into place, so concurrent builders
agree on one tree and a changed pin (or another interpreter ABI) builds a tree of its own.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .upstream import COMPONENTS, UpstreamUnavailable, cache_root, source_tree

QUBESDB = "qubes-core-qubesdb"
VCHAN = "qubes-core-vchan-socket"
STEP_TIMEOUT = 300.0  # one make or setup.py step; a cold build takes a few seconds
RECIPE = "1"  # bump when the steps below change what a build holds
CMD_ALIASES = ("qubesdb-read", "qubesdb-write", "qubesdb-rm", "qubesdb-multiread",
               "qubesdb-list", "qubesdb-watch")  # fmt: skip
# What the build runs; a missing one is reported with the Debian packages that provide it.
TOOLS = {"gcc": "gcc", "make": "make", "pkg-config": "pkg-config"}


@dataclass(frozen=True)
class QubesDBBuild:
    """A finished build: `bin/` (daemon, qubesdb-* tools), `lib/`, `python/` (the binding)."""

    root: Path

    @property
    def daemon(self) -> Path:
        return self.root / "bin" / "qubesdb-daemon"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def python_dir(self) -> Path:
        return self.root / "python"


def build_key() -> str:
    """What the build depends on: both pins, the recipe, the interpreter's extension ABI."""
    parts = [
        COMPONENTS[QUBESDB].content_sha256,
        COMPONENTS[VCHAN].content_sha256,
        RECIPE,
        str(sysconfig.get_config_var("EXT_SUFFIX")),
        sysconfig.get_paths()["include"],
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _missing_tools() -> list[str]:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        missing.append(f"python{sys.version_info.major}-dev (Python.h for {sys.executable})")
    return missing


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise UpstreamUnavailable(
            f"building QubesDB: {' '.join(argv)} ran over {STEP_TIMEOUT} s"
        ) from None
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise UpstreamUnavailable(
            f"building QubesDB: {' '.join(argv)} in {cwd} failed:\n" + "\n".join(tail)
        )


def _vchan_pc(include: Path, lib: Path) -> str:
    # qubesdb's Makefiles take the backend from the text after the last "vchan-" of the cflags,
    # which is why the include folder is named vchan-socket.
    return (
        "Name: vchan\nDescription: vchan over Unix sockets (qubes-core-vchan-socket)\n"
        f"Version: 0\nCflags: -I{include}\nLibs: -L{lib} -lvchan-socket -pthread\n"
    )


def _build_into(scratch: Path, final: Path) -> None:
    qubesdb_src, vchan_src = source_tree(QUBESDB), source_tree(VCHAN)
    vchan, qubesdb = scratch / "src-vchan", scratch / "src-qubesdb"
    shutil.copytree(vchan_src, vchan, symlinks=True)
    shutil.copytree(qubesdb_src, qubesdb, symlinks=True)
    lib, bin_dir, python = scratch / "lib", scratch / "bin", scratch / "python"
    include = scratch / "include" / "vchan-socket"
    for folder in (lib, bin_dir, python, include, scratch / "pkgconfig"):
        folder.mkdir(parents=True)
    # The binaries look for their libraries where the build will be, not in the scratch folder.
    rpath = f"-Wl,-rpath,{final / 'lib'}"
    env = {**os.environ, "PKG_CONFIG_PATH": str(scratch / "pkgconfig"), "LC_ALL": "C"}

    _run(["make", "-C", "vchan", "libvchan-socket.so"], vchan, env)
    shutil.copy2(vchan / "vchan" / "libvchan-socket.so", lib)
    shutil.copy2(vchan / "vchan" / "libvchan.h", include)
    (scratch / "pkgconfig" / "vchan.pc").write_text(_vchan_pc(include, lib))

    _run(["make", "-C", "client", f"LDFLAGS={rpath}"], qubesdb, env)
    _run(["make", "-C", "daemon", "SYSTEMD=0", f"LDFLAGS={rpath}"], qubesdb, env)
    shutil.copy2(qubesdb / "client" / "libqubesdb.so", lib)
    shutil.copy2(qubesdb / "daemon" / "qubesdb-daemon", bin_dir)
    shutil.copy2(qubesdb / "client" / "qubesdb-cmd", bin_dir)
    for alias in CMD_ALIASES:  # qubesdb-cmd acts by the name it is called with
        (bin_dir / alias).symlink_to("qubesdb-cmd")

    binding_env = {**env, "LDFLAGS": rpath}
    _run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(python),
         "--build-temp", str(scratch / "python-build")],
        qubesdb / "python",
        binding_env,
    )  # fmt: skip
    shutil.rmtree(vchan)
    shutil.rmtree(qubesdb)
    shutil.rmtree(scratch / "python-build")
    # What other builds would use: the alias pointing where this build will live.
    (scratch / "pkgconfig" / "vchan.pc").write_text(
        _vchan_pc(final / "include" / "vchan-socket", final / "lib")
    )
    (scratch / ".built").write_text(build_key() + "\n")


def build() -> QubesDBBuild:
    """The built QubesDB for this interpreter, building it once per cache (safe concurrently)."""
    final = cache_root() / f"build-qubesdb-{build_key()}"
    if (final / ".built").is_file():
        return QubesDBBuild(final)
    missing = _missing_tools()
    if missing:
        raise UpstreamUnavailable(
            "building QubesDB needs " + ", ".join(missing) + " (scripts/install.sh installs them)"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=final.parent))
    try:
        _build_into(scratch, final)
        try:
            scratch.rename(final)
        except OSError:  # another builder finished first; its tree is the same build
            if not (final / ".built").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return QubesDBBuild(final)
