"""The suite's labs: one shared by the session, and private ones for modules that change the
host in ways other modules must not see."""

import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from qubes_lab.builder import Lab, check_lab_name

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
    try:
        lab.up(topology)
        yield lab
    finally:
        lab.down()
