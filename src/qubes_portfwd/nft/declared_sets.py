"""The sets and maps a compiled script declares, with their key and value types (pure).

Read from a script's skeleton (`delta.ScriptParts`): what an element of each must look
like when written to the kernel directly (`netlink/delta_batch.py`).
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

SetPath = tuple[str, str, str]  # (family keyword, table, set or map name)


@dataclass(frozen=True)
class DeclaredSet:
    key_types: tuple[str, ...]  # `ifname`, `ipv4_addr`, `inet_proto`, … in key order
    value_type: str | None  # a map's: `verdict`, `inet_service`; None for a set
    interval: bool


@functools.lru_cache(maxsize=4)  # a script's structure does not depend on its forwards
def declared_sets(skeleton: tuple[str, ...]) -> Mapping[SetPath, DeclaredSet]:
    """Every `set`/`map` block of the skeleton's tables; one without a `type` line is left
    out (nothing can be written to it directly)."""
    found: dict[SetPath, DeclaredSet] = {}
    table: tuple[str, str] | None = None
    block: SetPath | None = None
    key_types: tuple[str, ...] | None = None
    value_type: str | None = None
    interval = False
    for line in skeleton:
        words = line.split()
        if table is None:
            if len(words) == 4 and words[0] == "table" and words[3] == "{":
                table = (words[1], words[2])
            continue
        if block is None:
            if line == "}":
                table = None
            elif len(words) == 3 and words[0] in ("set", "map") and words[2] == "{":
                block, key_types, value_type, interval = (*table, words[1]), None, None, False
            continue
        if words == ["}"]:
            if key_types is not None:
                found[block] = DeclaredSet(key_types, value_type, interval)
            block = None
        elif words and words[0] == "type":
            key, _, value = " ".join(words[1:]).partition(" : ")
            key_types = tuple(part.strip() for part in key.split(" . "))
            value_type = value.strip() or None
        elif words[:1] == ["flags"]:
            interval = "interval" in " ".join(words[1:]).replace(",", " ").split()
    return MappingProxyType(found)
