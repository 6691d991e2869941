"""Suite-wide rules: lab tests need root; under CI a skipped test fails the run."""

import os

import pytest
from hypothesis import settings

# Hypothesis' per-example deadline is a timed assertion: on a loaded 2-CPU machine it fails
# at random. Examples stay bounded by max_examples instead.
settings.register_profile("qubes-portfwd", deadline=None)
settings.load_profile("qubes-portfwd")

_skipped: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    needs_root = pytest.mark.skip(reason="lab test: needs root (run `make test` as root)")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(needs_root)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A lab test that skips in CI is a failure: nothing may pass by not running.
    if os.environ.get("CI") == "true" and _skipped:
        print(f"\nCI: {len(_skipped)} test(s) skipped, which CI counts as failure:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def stock_tool():
    """Run one of Qubes' own dom0 tools (pinned core-admin-client) against a socket.

    Where the pinned sources can be neither found nor fetched, the test is reported as not
    run with the reason (and CI, which always has them, fails on that skip).
    """
    from qubes_lab import stock_tools, upstream

    try:
        stock_tools.client_path()
    except upstream.UpstreamUnavailable as err:
        pytest.skip(f"Qubes' own client not available: {err}")
    return stock_tools.run_tool


@pytest.fixture
def real_qubesdb(tmp_path_factory: pytest.TempPathFactory):
    """Real QubesDB (pinned sources, built once): dom0's side started; `add_qube` for each qube.

    Needs root (mount namespaces). Without verified sources or build tools the test is
    reported as not run with the reason (and CI, which always has them, fails on that skip).
    """
    from qubes_lab import qubesdb_real

    workdir = tmp_path_factory.mktemp("qubesdb")
    try:
        qubesdb = qubesdb_real.RealQubesDB.start(workdir)
    except qubesdb_real.UpstreamUnavailable as err:
        pytest.skip(f"real QubesDB not available: {err}")
    try:
        yield qubesdb
    finally:
        qubesdb.stop()
