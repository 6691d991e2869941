"""The record of hops in force, which lets a restarted agent end flows of removed forwards."""

from pathlib import Path

from qubes_portfwd.agent.in_force import RECORD_FILE, InForceRecord
from qubes_portfwd.model.entries import parse_hop

HOP = parse_hop(
    "/qubes-portfwd/0123456789ab/4",
    "role=dnat family=4 proto=tcp in=eth0 ports=80-81 to=10.137.0.6 toports=8080-8081 "
    "srchost=0.0.0.0/0",
)


def test_saved_hops_load_back_in_a_new_record(tmp_path: Path) -> None:
    InForceRecord(tmp_path / "run").save([HOP])
    assert InForceRecord(tmp_path / "run").load() == (HOP,)
    InForceRecord(tmp_path / "run").save([])
    assert InForceRecord(tmp_path / "run").load() == ()


def test_no_directory_means_no_memory(tmp_path: Path) -> None:
    record = InForceRecord(None)
    record.save([HOP])
    assert record.load() == ()


def test_a_damaged_record_or_entry_counts_as_none(tmp_path: Path) -> None:
    (tmp_path / RECORD_FILE).write_text("{not json")
    assert InForceRecord(tmp_path).load() == ()
    (tmp_path / RECORD_FILE).write_text(
        '{"/qubes-portfwd/0123456789ab/4": "role=dnat family=4", "x": "y"}'
    )
    assert InForceRecord(tmp_path).load() == ()
