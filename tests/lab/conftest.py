"""One lab for the whole session, named for this test run, always torn down."""

import os
from collections.abc import Iterator

import pytest

from qubes_lab.builder import Lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    session_lab = Lab(f"t{os.getpid()}")
    try:
        session_lab.up()
        yield session_lab
    finally:
        session_lab.down()
