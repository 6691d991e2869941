"""kill -9 of the admin service while it writes rules never leaves a partial firewall.xml.

The real `qubes-lab-qubesd` runs as its own process on a temp state (no agents: hop
levels time out quickly). A client replaces a large rule set or adds a forward while the
test kills the service with SIGKILL after a random delay, then restarts it. Every time, the
file loads and holds the old or the new rules, never a mix; temp files do not pile up.
"""

import json
import random
import time
from pathlib import Path

import pytest

from qubes_lab.qubesd.firewall_xml import load_firewall
from qubes_portfwd.model.rule import Rule
from qubes_portfwd.model.rule_text import format_rule, parse_rule
from qubes_portfwd.store.atomic_file import temp_files

from .admind_process import TARGET, AdmindFiles, Call, filter_lines, forward_line, kill_hard

pytestmark = pytest.mark.lab  # ~30 s of a real service restarted 40 times

ITERATIONS = 40
BUDGET_SECONDS = 30.0
RULES_PER_SET = 800
# A Set of RULES_PER_SET rules takes ~0.3 s here; kills land before, during and after it.
LONGEST_DELAY = 0.35


def rules_of(lines: list[str]) -> list[Rule]:
    return [parse_rule(line) for line in lines]


def test_sigkill_while_writing_leaves_old_or_new_rules(tmp_path: Path) -> None:
    files = AdmindFiles(tmp_path)
    rng = random.Random(9)
    process = files.start()
    try:
        files.client().firewall_set(TARGET, filter_lines(0, RULES_PER_SET))
        current = rules_of(filter_lines(0, RULES_PER_SET))
        outcomes = {"old": 0, "new": 0}
        deadline = time.monotonic() + BUDGET_SECONDS
        iteration = 0
        while iteration < ITERATIONS and time.monotonic() < deadline:
            iteration += 1
            if iteration % 3:
                lines = filter_lines(iteration, RULES_PER_SET - iteration)
                wanted = rules_of(lines)
                call = Call(lambda lines=lines: files.client().firewall_set(TARGET, lines))
            else:
                line = forward_line(iteration)
                wanted = [*current, parse_rule(line)]
                call = Call(lambda line=line: files.client().add_forward(TARGET, line))
            call.start()
            time.sleep(rng.uniform(0, LONGEST_DELAY))  # the random kill point, not a wait
            kill_hard(process.pid)
            call.join(timeout=30)
            assert not call.is_alive(), "the client hung after the service died"

            stored = load_firewall(files.firewall_xml())  # raises if partial or corrupt
            assert stored in (current, wanted), f"iteration {iteration}: a mixed rule set"
            outcomes["new" if stored == wanted else "old"] += 1
            current = stored
            for name in ("topology.json", "order.json"):
                json.loads((files.state_dir / name).read_bytes())
            assert len(temp_files(files.firewall_xml())) <= 1, "temp files pile up"

            process = files.start()
            served = files.client().firewall_get(TARGET)
            assert served == [format_rule(r) for r in current], "the restart changed the rules"
        assert iteration >= 10, f"only {iteration} kills within {BUDGET_SECONDS} s"
        # A clean write after all the kills leaves no killed writer's temp file behind.
        files.client().firewall_set(TARGET, filter_lines(999, 10))
        assert temp_files(files.firewall_xml()) == []
        assert load_firewall(files.firewall_xml()) == rules_of(filter_lines(999, 10))
        print(f"{iteration} kills: {outcomes}")
    finally:
        kill_hard(process.pid)


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    files = AdmindFiles(tmp_path)
    process = files.start()
    try:
        files.client().firewall_set(TARGET, filter_lines(0, 5))
        dead_pid = process.pid
        kill_hard(process.pid)
        leftover = files.firewall_xml().parent / f".firewall.xml.{dead_pid}.abcd1234.tmp"
        leftover.write_bytes(b"<firewall")  # what a writer killed mid-write leaves
        process = files.start()
        files.client().firewall_set(TARGET, filter_lines(1, 5))
        assert not leftover.exists()
        assert load_firewall(files.firewall_xml()) == rules_of(filter_lines(1, 5))
    finally:
        kill_hard(process.pid)
