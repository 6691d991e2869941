"""What wakes natd's input-rule keeper (no root): `nft monitor tables` lines about Qubes'
`ip qubes` table, not the agents' own tables coming and going; the slow timer still runs
however busy the monitor is. A real process prints the monitor's lines."""

import asyncio
import sys

import pytest

from qubes_portfwd.natd import input_rules


class Checks:
    def __init__(self) -> None:
        self.count = 0
        self.families = (4,)

    async def check(self) -> None:
        self.count += 1


def follow(monitor_script: str, fallback: float) -> int:
    """How many checks `_follow` made while a process printed `monitor_script`'s lines."""

    async def scenario() -> int:
        monitor = await asyncio.create_subprocess_exec(
            sys.executable, "-u", "-c", monitor_script, stdout=asyncio.subprocess.PIPE
        )
        checks = Checks()
        try:
            await asyncio.wait_for(
                input_rules._follow(monitor, checks, asyncio.Event()),  # type: ignore[arg-type]
                30,
            )
        finally:
            await monitor.wait()
        return checks.count

    original = input_rules.FALLBACK_CHECK
    input_rules.FALLBACK_CHECK = fallback
    try:
        return asyncio.run(scenario())
    finally:
        input_rules.FALLBACK_CHECK = original


@pytest.mark.parametrize(
    ("line", "ours"),
    [
        (b"delete table ip qubes\n", True),
        (b"add table ip qubes\n", True),
        (b"delete table ip qubes-portfwd\n", False),
        (b"add table ip6 qubes\n", False),
        (b"delete table ip qubes-firewall\n", False),
        (b"\n", False),
    ],
)
def test_only_qubes_own_table_concerns_it(line: bytes, ours: bool) -> None:
    assert input_rules.concerns_base_table(line) is ours


def test_qubes_ip6_table_concerns_it_where_natd_serves_ipv6() -> None:
    assert input_rules.concerns_base_table(b"add table ip6 qubes\n", (4, 6))
    assert input_rules.concerns_base_table(b"delete table ip qubes\n", (4, 6))
    assert not input_rules.concerns_base_table(b"add table ip6 qubes-firewall\n", (4, 6))


def test_a_reload_of_qubes_table_is_one_check() -> None:
    script = (
        "import time\n"
        "print('delete table ip qubes'); print('delete table ip qubes-portfwd')\n"
        "print('add table ip qubes')\n"
        "time.sleep(1.5)\n"
    )
    assert follow(script, fallback=60) == 1


def test_other_tables_alone_wake_nothing() -> None:
    script = (
        "import time\nfor _ in range(50):\n    print('add table ip qubes-portfwd')\ntime.sleep(1)\n"
    )
    assert follow(script, fallback=60) == 0


def test_the_timer_runs_however_busy_the_monitor_is() -> None:
    script = (
        "import time\n"
        "for _ in range(150):\n    print('delete table ip qubes-portfwd'); time.sleep(0.01)\n"
    )
    assert follow(script, fallback=0.3) >= 1
