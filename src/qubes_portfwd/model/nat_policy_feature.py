"""Where a qube's NAT traversal policy is stored: one feature of that qube (pure).

`portfwd-nat-policy` = the policy's lines joined by `;` (a feature value is one line of
printable ASCII). The controller checks and decides (controller/nat_policy.py); front ends
read and write it through the stock feature methods.
"""

from collections.abc import Iterable

FEATURE_POLICY = "portfwd-nat-policy"
SEPARATOR = ";"


def join_lines(lines: Iterable[str]) -> str:
    """The feature value holding these lines (blank ones left out)."""
    return f"{SEPARATOR} ".join(line.strip() for line in lines if line.strip())


def split_value(value: str) -> list[str]:
    """The lines a feature value holds, as written (blank ones left out)."""
    return [line.strip() for line in value.split(SEPARATOR) if line.strip()]
