"""Suite-wide rules (lab tests need root; under CI a skipped test fails the run) and the
suite's shared fixtures: its labs, Qubes' own tools, real QubesDB."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from admin_service import RunningService, make_service
from lab_fixture import lab_name, module_tag, running_lab, sweep_abandoned_labs
from qubes_lab.builder import Lab

# Hypothesis' per-example deadline is a timed assertion: on a loaded 2-CPU machine it fails
# at random. Examples stay bounded by max_examples instead.
settings.register_profile("qubes-portfwd", deadline=None)
settings.load_profile("qubes-portfwd")

_skipped: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Labs left by a test run that was killed (no `finally` ran) go before this one starts."""
    if os.geteuid() == 0:
        for name in sweep_abandoned_labs():
            print(f"\nremoved lab {name}, left by a test run that is gone")


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
def lab() -> Iterator[Lab]:
    """One lab for the whole session: for modules that add and remove only their own forwards
    and rules, and leave the lab as they found it."""
    with running_lab(lab_name("t")) as shared:
        yield shared


@pytest.fixture(scope="module")
def private_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    """A lab of the module's own, named after it, for modules that change the host (netvm
    changes, restarts, providers, killed daemons): torn down when the module ends. A module's
    `LAB_TOPOLOGY` (the text of a lab topology file) replaces the default host."""
    topology = None
    text = getattr(request.module, "LAB_TOPOLOGY", None)
    if text is not None:
        topology = tmp_path_factory.mktemp("topology") / "lab.toml"
        topology.write_text(text)
    with running_lab(lab_name(module_tag(request.module.__name__)), topology) as own:
        yield own


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningService]:
    """A real admin service in a thread of this process, on a temp socket (no root, no
    agents: nothing reports, so hops stay pending)."""
    running = make_service(tmp_path, agent_timeout=0.05)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def admin_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The same service as its own process, for CLIs run in this process: its socket, also
    exported as $QUBESD_SOCKET, and its status document as $QUBES_PORTFWD_STATUS."""
    running = make_service(tmp_path, agent_timeout=0.1)
    running.start_process()
    monkeypatch.setenv("QUBESD_SOCKET", str(running.socket_path))
    monkeypatch.setenv("QUBES_PORTFWD_STATUS", str(running.status_file))
    try:
        yield running.socket_path
    finally:
        running.stop()


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
