"""Fair NAT traversal: while `personal` floods natd in sys-firewall over NAT-PMP, PCP and
UPnP (its asks waiting for the user, the longest a request can hold a place), `work`'s real
natpmpc, upnpc and a PCP MAP are answered as usual, and only `personal` is refused, with each
protocol's own temporary refusal."""

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from natd_lab import UPNP_RE, NatLab
from servers import background, wait_for

from qubes_lab.builder import Lab
from qubes_portfwd.controller import pending as pending_table
from qubes_portfwd.natd.upnp_soap import CONTROL_PATH

pytestmark = pytest.mark.lab

FLOOD_SCRIPT = Path(__file__).with_name("nat_flood.py")
FLOOD_LIMIT = 120  # seconds: the flooder stops by itself even if the test is killed
FLOOD_STARTED_TIMEOUT = 20.0
FLOOD_STOP_TIMEOUT = 30.0
PARALLEL_NATPMPC = 16
NATPMP_OUT_OF_RESOURCES = "4"
PCP_USER_EX_QUOTA = "10"
T = TypeVar("T")


@pytest.fixture
def env(lab: Lab) -> Iterator[NatLab]:
    with NatLab.of(lab).cleaned() as nat:
        yield nat


def _report(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _timed(call: Callable[[], T], figures: dict[str, Any], name: str) -> T:
    """call(), its duration recorded as a figure for the report (never asserted on)."""
    started = time.monotonic()
    result = call()
    figures[name] = round(time.monotonic() - started, 3)
    return result


def test_a_flooding_qube_is_refused_alone(env: NatLab, tmp_path: Path) -> None:
    lab, figures = env.lab, {}
    env.client.nat_policy_set("work", ["ports=1024-65535 action=allow max-lifetime=600"])
    # personal keeps the default policy (ask): its requests wait in dom0 for the user.
    work = str(lab.topology["work"].address4)
    personal = str(lab.topology["personal"].address4)
    control = env.description_url.replace("/rootDesc.xml", CONTROL_PATH)
    alone = _timed(
        lambda: env.natpmpc("work", "-a", "18300", "8300", "tcp", "600"),
        figures,
        "work natpmpc alone, s",
    )
    assert alone.mapped_port == 18300

    report, stop = tmp_path / "flood.json", tmp_path / "stop"
    flood = ["python3", str(FLOOD_SCRIPT), env.gateway, personal, control]
    with contextlib.ExitStack() as running:
        running.enter_context(
            background(lab, "personal", [*flood, str(report), str(stop), str(FLOOD_LIMIT)])
        )
        for port in range(25000, 25000 + PARALLEL_NATPMPC):
            argv = ["timeout", "60", "natpmpc", "-g", env.gateway, "-a", str(port), str(port)]
            running.enter_context(background(lab, "personal", [*argv, "tcp", "3600"]))
        running.callback(stop.touch)
        # Flooding for real: personal's share is used up and it is being refused.
        assert wait_for(
            lambda: _report(report).get("natpmp", {}).get(NATPMP_OUT_OF_RESOURCES, 0) > 0,
            FLOOD_STARTED_TIMEOUT,
        ), f"the flood was never refused: {_report(report)}"
        during = _report(report)
        mapped = _timed(
            lambda: env.natpmpc("work", "-a", "18301", "8301", "tcp", "600"),
            figures,
            "work natpmpc during the flood, s",
        )
        upnp = _timed(
            lambda: env.upnpc("work", "-a", work, "8302", "18302", "tcp", "600"),
            figures,
            "work upnpc during the flood, s",
        )
        pcp = _timed(
            lambda: env.pcp_map("work", 8303, 18303), figures, "work PCP MAP during the flood, s"
        )
        still = _report(report)
        pending = env.client.nat_pending()
        stop.touch()
        finished = wait_for(lambda: _report(report).get("done", False), FLOOD_STOP_TIMEOUT)
    final = _report(report)
    figures["flood sent while work asked"] = {
        k: v - during["sent"].get(k, 0) for k, v in still["sent"].items()
    }
    figures.update(flood=final, pending=[(e["qube"], e["port"]) for e in pending])
    print(f"\nNAT flood figures: {json.dumps(figures, indent=1)}")

    # work: served as usual, on every protocol, while personal kept flooding.
    assert mapped.returncode == 0, mapped.stderr
    assert mapped.mapped_port == 18301
    found = UPNP_RE.search(upnp.stdout)
    assert found and found.group(2) == "18302", upnp
    assert pcp == (0, 18303), pcp
    assert still["sent"]["natpmp"] > during["sent"]["natpmp"]  # the flood went on meanwhile
    # personal: refused alone, with each protocol's temporary refusal; nothing was mapped.
    assert finished, "the flooder did not stop"
    assert final["natpmp"].get(NATPMP_OUT_OF_RESOURCES, 0) > 0, final
    assert final["pcp"].get(PCP_USER_EX_QUOTA, 0) > 0, final
    assert set(final["upnp"]) & {"503", "500/501"}, final
    assert {e["qube"] for e in pending} <= {"personal"}
    assert len(pending) <= pending_table.MAX_PENDING_PER_OWNER
    assert env.nat_forwards("personal") == []
    assert sorted(env.nat_forwards("work")) == ["NAT-PMP", "NAT-PMP", "PCP", "UPnP: libminiupnpc"]
