"""firewall.xml on disk: Qubes' default when absent, atomic replacement, size-limited reads."""

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qubes_lab.qubesd import firewall_xml
from qubes_lab.qubesd.firewall_xml import (
    MAX_FIREWALL_XML_BYTES,
    load_firewall,
    save_firewall,
)
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import Action, FilterRule, Rule
from qubes_portfwd.model.rule_text import parse_rule, parse_rules

from .test_firewall_xml_read import QUBES_V1_DENY, QUBES_V2, QUBES_V2_RULES

BOOT = "b007"
NOW = 1_600_000_000.0


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "firewall.xml")


def test_missing_file_means_qubes_default(tmp_path: Path) -> None:
    assert load_firewall(tmp_path / "firewall.xml") == [FilterRule(Action.ACCEPT)]


def test_load_v2_and_v1(tmp_path: Path) -> None:
    path = tmp_path / "firewall.xml"
    path.write_bytes(QUBES_V2)
    assert load_firewall(path) == QUBES_V2_RULES
    path.write_bytes(QUBES_V1_DENY)
    assert load_firewall(str(path))[0] == parse_rule("action=accept specialtarget=dns")


def test_save_then_load(tmp_path: Path) -> None:
    path = tmp_path / "firewall.xml"
    rules = parse_rules(
        "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 "
        "srchost=0.0.0.0/0 via=sys-firewall,sys-net comment=web\naction=accept\n"
    )
    save_firewall(path, rules, NOW, BOOT)
    assert load_firewall(path) == rules
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    assert _leftovers(tmp_path) == []


def test_save_replaces_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "firewall.xml"
    path.write_bytes(QUBES_V2)
    path.chmod(0o640)
    save_firewall(path, [FilterRule(Action.DROP)], NOW, BOOT)
    assert load_firewall(path) == [FilterRule(Action.DROP)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


def test_unserialisable_rules_leave_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "firewall.xml"
    path.write_bytes(QUBES_V2)
    with pytest.raises(ValidationError):
        save_firewall(path, [FilterRule(Action.ACCEPT, comment="<&>")], NOW, BOOT)
    assert path.read_bytes() == QUBES_V2
    assert _leftovers(tmp_path) == []


def test_failed_rename_leaves_the_old_state_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "firewall.xml"
    target.mkdir()
    (target / "keep").write_bytes(b"x")
    with pytest.raises(OSError):
        save_firewall(target, [FilterRule(Action.DROP)], NOW, BOOT)
    assert (target / "keep").read_bytes() == b"x"
    assert _leftovers(tmp_path) == []


def test_write_failing_midway_leaves_the_old_file_byte_identical(tmp_path: Path) -> None:
    """A real short write: the kernel refuses bytes past RLIMIT_FSIZE (root included)."""
    path = tmp_path / "firewall.xml"
    path.write_bytes(QUBES_V2)
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from qubes_portfwd.model.rule import Action, FilterRule
        from qubes_lab.qubesd.firewall_xml import save_firewall
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        rules = [FilterRule(Action.ACCEPT, comment="x" * 1000) for _ in range(50)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            save_firewall({str(path)!r}, rules, 0.0, "b007")
        except OSError as err:
            print(err.errno)
            sys.exit(3)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == "27"  # EFBIG
    assert path.read_bytes() == QUBES_V2
    assert _leftovers(tmp_path) == []


def test_oversized_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "firewall.xml"
    with path.open("wb") as file:
        file.truncate(MAX_FIREWALL_XML_BYTES * 64)  # sparse: refused without being read
    with pytest.raises(ValidationError) as caught:
        load_firewall(path)
    assert caught.value.field == "firewall.xml" and "larger than" in caught.value.message


def test_unreadable_path_is_an_error_not_the_default(tmp_path: Path) -> None:
    (tmp_path / "firewall.xml").mkdir()
    with pytest.raises(IsADirectoryError):
        load_firewall(tmp_path / "firewall.xml")
    assert os.path.isdir(tmp_path / "firewall.xml")


def _forwards(count: int) -> list[Rule]:
    return [
        parse_rule(
            "action=forward forwardtype=external proto=tcp "
            f"srcports={1000 + n} dstports={1000 + n} srchost=192.0.2.0/24"
        )
        for n in range(count)
    ]


def test_ten_thousand_forwards_save_and_load_back(tmp_path: Path) -> None:
    path = tmp_path / "firewall.xml"
    rules = _forwards(10_000)
    save_firewall(path, rules, now=0, boot_id="b")
    assert load_firewall(path) == rules


def test_save_refuses_what_load_would_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "firewall.xml"
    save_firewall(path, _forwards(1), now=0, boot_id="b")
    before = path.read_bytes()
    monkeypatch.setattr(firewall_xml, "MAX_FIREWALL_XML_BYTES", len(before) + 10)
    with pytest.raises(ValidationError, match=r"over the \d+ bytes a firewall\.xml may have"):
        save_firewall(path, _forwards(5), now=0, boot_id="b")
    assert path.read_bytes() == before
