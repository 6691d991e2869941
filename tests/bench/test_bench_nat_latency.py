"""natd against miniupnpd: samples become summaries and the report's rows."""

from datetime import datetime

from bench.nat_latency import Sample, _mapped_port, _series, nat_latency_lines, stage_breakdown


def test_the_mapped_port_is_read_from_natpmpc() -> None:
    out = "Mapped public port 21003 protocol TCP to local port 8181 liftime 60\n"
    assert _mapped_port(out) == 21003
    assert _mapped_port("readnatpmpresponseorretry() failed : network failure") is None


def test_failed_samples_are_counted_not_summarized() -> None:
    series = _series([Sample(0.5, 0.6, 0.7), None, Sample(0.3, 0.4, 0.5)])
    assert series["failures"] == 1
    assert series["working_ms"]["count"] == 2
    assert series["end_to_end_ms"]["maximum"] == 700.0
    assert "end_to_end_ms" not in _series([Sample(0.01, 0.02, None)])
    assert _series([None]) == {"failures": 1}


def test_rows_show_both_servers_and_the_ratio() -> None:
    section = {
        "samples": 2,
        "client": "work",
        "natd": _series([Sample(0.5, 0.6, 0.7), Sample(0.5, 0.6, 0.7)]),
        "miniupnpd": _series([Sample(0.01, 0.02, None), Sample(0.01, 0.02, None)]),
        "ratio_working_p50": 30.0,
    }
    lines = nat_latency_lines(section)
    text = "\n".join(lines)
    assert "natd, sys-net -> sys-firewall" in text and "miniupnpd, sys-net" in text
    natd_row = next(line for line in lines if "natd, sys-net" in line)
    assert natd_row.split()[-4:] == ["500.0", "600.0", "600.0", "0"]
    end_row = next(line for line in lines if "end to end" in line)
    assert end_row.split()[-3:] == ["700.0", "700.0", "0"]
    assert any(line.endswith("natd / miniupnpd (working p50) = 30.0") for line in lines)
    table = lines[1 : 1 + 2 + 3]
    assert len({len(line) for line in table}) == 1


def _stamp(wall: float) -> str:
    moment = datetime.fromtimestamp(wall)
    return moment.strftime("%Y-%m-%d %H:%M:%S,") + f"{moment.microsecond // 1000:03d}"


def test_the_stages_come_from_the_admin_log_between_request_and_answer() -> None:
    t0 = 1_800_000_000.0
    log = "\n".join(
        [
            f"{_stamp(t0 - 5)} a.publisher INFO published 1 entries to x (generation 1)",
            f"{_stamp(t0 + 0.010)} a.server INFO admin.vm.portfwd.NatRequest+ sys-firewall",
            f"{_stamp(t0 + 0.050)} a.publisher INFO published 2 entries to work (generation 3)",
            f"{_stamp(t0 + 0.250)} a.publisher INFO published 9 entries to sys-net (generation 4)",
            f"{_stamp(t0 + 0.400)} a.methods.nat INFO NAT NAT-PMP: work tcp/1 -> 192.0.2.2:1",
        ]
    )
    stages = stage_breakdown(log, [Sample(0.405, 0.41, None, t0), Sample(1.0, 1.0, None, t0 + 99)])
    assert list(stages) == [
        "natpmpc -> dom0",
        "dom0: decide, store, plan",
        "level work: agent applies, publisher sees it",
        "level sys-net: agent applies, publisher sees it",
        "grant -> natpmpc",
    ]
    expected = [10.0, 40.0, 200.0, 150.0, 5.0]
    assert all(abs(stages[k] - v) < 1.5 for k, v in zip(stages, expected, strict=True))
