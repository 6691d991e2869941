"""The packages built once per session by `scripts/build_packages.py` (what `make packages`
runs), into a temp dir; and helpers to read them."""

import io
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 300
TOOL_TIMEOUT = 60


@dataclass(frozen=True)
class BuiltPackages:
    dom0_rpm: Path
    vm_rpm: Path
    vm_deb: Path
    output: str  # what the build printed (sizes, time)


@pytest.fixture(scope="session")
def built_packages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltPackages]:
    missing = [tool for tool in ("rpmbuild", "rpm2archive", "dpkg-deb") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"cannot build packages without {missing} (apt-get install rpm)")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_packages.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (dom0,) = out.glob("qubes-portfwd-dom0-*.noarch.rpm")
    (vm_rpm,) = out.glob("qubes-portfwd-vm-*.noarch.rpm")
    (vm_deb,) = out.glob("qubes-portfwd-vm_*_all.deb")
    yield BuiltPackages(dom0, vm_rpm, vm_deb, done.stdout)


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def extract_rpm(package: Path, into: Path) -> Path:
    """The RPM's payload unpacked under `into` (rpm2archive: no cpio needed)."""
    payload = subprocess.run(
        ["rpm2archive", "-n"],
        stdin=package.open("rb"),
        capture_output=True,
        timeout=TOOL_TIMEOUT,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
        archive.extractall(into, filter="tar")
    return into


def extract_deb(package: Path, into: Path) -> Path:
    run(["dpkg-deb", "-x", str(package), str(into)])
    return into
