"""natd's input rules around a restore of Qubes' base table in sys-firewall: while the
table is gone natd says so once (there is nothing it can put back) instead of an nft error at
every check, and once the table is back its rules, with the per-source rates, are too."""

import time
from pathlib import Path

import pytest
from natd_lab import NatLab, natd_answers
from servers import wait_for

from qubes_lab.builder import Lab
from qubes_portfwd.natd import input_rules

pytestmark = pytest.mark.lab

QUBE = "sys-firewall"
LOG_TIMEOUT = 15.0
MISSING = "is missing"
PUT_BACK = "put back"


def _log(lab: Lab) -> Path:
    return lab.state_dir / "logs" / f"natd-{QUBE}.log"


def _since(path: Path, offset: int) -> str:
    return path.read_bytes()[offset:].decode(errors="replace")


def _nft(lab: Lab, *argv: str) -> str:
    return lab.run(QUBE, ["nft", *argv], capture_output=True, text=True, check=True).stdout


def test_a_base_table_restore_is_followed_without_an_error_at_every_check(lab: Lab) -> None:
    env = NatLab.of(lab, QUBE)
    assert natd_answers(env)
    log = _log(lab)
    start = log.stat().st_size

    _nft(lab, "delete", "table", "ip", "qubes")
    assert wait_for(lambda: MISSING in _since(log, start), LOG_TIMEOUT), _since(log, start)
    # Wake natd's check twice while the table is gone (a change to any `qubes` table does):
    # the old natd logged an nft error at each. The pauses only let each burst be its own
    # check.
    for _ in range(2):
        _nft(lab, "add", "table", "inet", "qubes")
        _nft(lab, "delete", "table", "inet", "qubes")
        time.sleep(2 * input_rules.MAX_SETTLE)
    lab.reload_base_rules(QUBE)  # Qubes' base rules loaded again
    assert wait_for(lambda: PUT_BACK in _since(log, start), LOG_TIMEOUT), _since(log, start)
    assert wait_for(lambda: natd_answers(env), LOG_TIMEOUT), "natd unreachable after the restore"

    # Later checks find everything in place: flushed by hand (no table event), the kernel's
    # notification wakes natd, which puts the rules back, and again without an error.
    _nft(lab, "flush", "chain", "ip", "qubes", input_rules.CHAIN)
    assert wait_for(lambda: _since(log, start).count(PUT_BACK) == 2, LOG_TIMEOUT)

    text = _since(log, start)
    assert " ERROR " not in text, text
    assert text.count(MISSING) == 1, text
    chain = _nft(lab, "list", "chain", "ip", "qubes", input_rules.CHAIN)
    assert chain.count("limit rate over") == 2 and chain.count("accept") == 2, chain
    custom = _nft(lab, "list", "chain", "ip", "qubes", "custom-input")
    assert custom.count(f"jump {input_rules.CHAIN}") == 1, custom
