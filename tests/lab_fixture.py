"""The suite's labs: one shared by the session, and private ones for modules that change the
host in ways other modules must not see."""

import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from qubes_lab.builder import Lab, check_lab_name
from qubes_portfwd.model.errors import ValidationError

# Which test run owns each lab it built (a file per lab: the pytest's pid). A run killed by a
# signal (a SIGBUS in Qt, a CI timeout) never reaches its `finally`; the next run removes the
# labs whose owner is gone.
OWNERS = Path("/run/qubes-lab-test-owners")
TAG_INITIALS = 4  # lab names are 1-16 characters: tag (≤ 6) + this run's pid (≤ 7 digits)


def module_tag(module_name: str) -> str:
    """A short tag naming a test module: its words' initials, and a digest so that two modules
    with the same initials still get different labs."""
    words = module_name.rsplit(".", 1)[-1].removeprefix("test_").split("_")
    initials = "".join(word[0] for word in words if word)[:TAG_INITIALS]
    return f"{initials}{zlib.crc32(module_name.encode()) % 256:02x}"


def lab_name(tag: str) -> str:
    """The name of this test run's lab `tag` (the pid keeps concurrent runs apart)."""
    return check_lab_name(f"{tag}{os.getpid()}")


@contextmanager
def running_lab(name: str, topology: Path | None = None) -> Iterator[Lab]:
    """Lab `name` built (the default host, or `topology`), and always torn down: also when
    building it failed halfway."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    lab = Lab(name)
    OWNERS.mkdir(parents=True, exist_ok=True)
    owner = OWNERS / name
    owner.write_text(f"{os.getpid()}\n")
    try:
        lab.up(topology)
        yield lab
    finally:
        lab.down()
        owner.unlink(missing_ok=True)


def _is_running_pytest(pid: int) -> bool:
    try:
        return b"pytest" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def sweep_abandoned_labs(
    owners: Path = OWNERS,
    tear_down: Callable[[str], None] = lambda name: Lab(name).down(),
    is_alive: Callable[[int], bool] = _is_running_pytest,
) -> list[str]:
    """Tear down, by their exact names, the labs whose owning test run is gone; their names."""
    if not owners.is_dir():
        return []
    swept = []
    for owner in sorted(owners.iterdir()):
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and is_alive(pid):
            continue  # another run, here now (a second CI clone, a developer's run)
        try:
            name = check_lab_name(owner.name)
        except ValidationError:  # not a lab name: nothing of ours to tear down
            owner.unlink(missing_ok=True)
            continue
        tear_down(name)
        owner.unlink(missing_ok=True)
        swept.append(name)
    return swept
