"""The private labs' names: valid for the lab, and one per test module; labs of a test run
that was killed are torn down by the next run, and no one else's."""

import os
from pathlib import Path

from lab_fixture import lab_name, module_tag, sweep_abandoned_labs
from qubes_lab.builder import check_lab_name

TESTS = Path(__file__).parent
# The longest pid Linux hands out (pid_max is at most 2^22).
LONGEST_PID = str(2**22)


def _module_names() -> list[str]:
    return [
        ".".join(path.relative_to(TESTS).with_suffix("").parts)
        for path in sorted(TESTS.rglob("test_*.py"))
    ]


def test_every_test_module_gets_a_lab_name_of_its_own() -> None:
    tags = {name: module_tag(name) for name in _module_names()}
    assert len(tags) > 50
    assert len(set(tags.values())) == len(tags), "two test modules would share a lab"


def test_the_longest_tag_with_the_longest_pid_is_a_valid_lab_name() -> None:
    longest = max((module_tag(name) for name in _module_names()), key=len)
    assert check_lab_name(f"{longest}{LONGEST_PID}")
    assert lab_name(longest).startswith(longest)


def test_the_tag_names_the_module() -> None:
    assert module_tag("lab.test_lifecycle_restart").startswith("lr")
    assert module_tag("lab.test_lifecycle_restart") != module_tag("lab.test_lifecycle_revocation")


def test_only_labs_whose_test_run_is_gone_are_torn_down(tmp_path: Path) -> None:
    (tmp_path / "gone1").write_text("4194305\n")  # above pid_max: no such process
    (tmp_path / "mine2").write_text(f"{os.getpid()}\n")
    (tmp_path / "torn3").write_text("not a pid\n")
    (tmp_path / "Not_A_Lab").write_text("4194305\n")
    torn: list[str] = []

    swept = sweep_abandoned_labs(tmp_path, torn.append, lambda pid: pid == os.getpid())

    assert swept == torn == ["gone1", "torn3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine2"]
