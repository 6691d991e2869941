"""The private labs' names: valid for the lab, and one per test module."""

from pathlib import Path

from lab_fixture import lab_name, module_tag
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
