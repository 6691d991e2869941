"""In-place changes between two scripts of the compiler (pure).

A compiled script replaces our tables whole; the kernel then re-registers hooks and frees
every old object, ~20 ms even for one forward. Between two scripts whose structure is the
same (tables, set declarations, base chains, lookup rules, jumps) only set elements and the
forwards' own chains (`fwd-*`, `hairpin-*`) differ, so a transaction that deletes and adds
just those leaves the kernel as the full script would. `delta_script` returns None whenever
anything else differs: the caller then loads the full script.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from .hairpin import hairpin_chain
from .syntax import forward_chain

SetPath = tuple[str, str, str]  # (family keyword, table, set or map name)
ChainPath = tuple[str, str, str]

_OWN_CHAIN_PREFIXES = (forward_chain(""), hairpin_chain(""))


@dataclass(frozen=True)
class ScriptParts:
    """A compiled script split into what an in-place change may touch and the rest."""

    skeleton: tuple[str, ...]
    elements: Mapping[SetPath, frozenset[str]]  # every declared set and map, maybe empty
    maps: frozenset[SetPath]  # which of them are maps (deleted by key)
    chains: Mapping[ChainPath, tuple[str, ...]]  # the forwards' own chains: their rules


def split_script(script: str) -> ScriptParts:
    """The parts of a script `compile_qube` wrote; ValueError for any other text."""
    # One loop with local state, no call per line: a script of 10,000 forwards has ~80,000
    # lines, and the agent splits two scripts per apply.
    skeleton: list[str] = []
    elements: dict[SetPath, set[str]] = {}
    maps: set[SetPath] = set()
    chains: dict[ChainPath, list[str]] = {}
    table: tuple[str, str] | None = None
    block: SetPath | None = None  # the set, map or own chain being read
    rules: list[str] = []  # the own chain being read: its rules
    in_chain = False
    pending: list[str] | None = None  # an `elements = {` still open
    pending_set: set[str] = set()  # and the set it fills
    for line in script.splitlines():
        if not line or line.startswith("#"):
            continue
        if pending is not None:
            pending.append(line.strip())
            if line.rstrip().endswith("}"):
                pending_set.update(_items(" ".join(pending)))
                pending = None
            continue
        if table is None:
            words = line.split()
            if line.startswith("delete rule "):
                continue  # our jumps by handle: the handles change at every full load
            if line.startswith("add element "):
                path = (words[2], words[3], words[4])
                elements.setdefault(path, set()).update(_items(line))
                continue
            if line.startswith("table ") and line.endswith(" {"):
                table = (words[1], words[2])
            skeleton.append(line)
            continue
        stripped = line.strip()
        if in_chain:
            if stripped == "}":
                block, in_chain = None, False
            else:
                rules.append(stripped)
            continue
        if block is not None and stripped.startswith("elements = {"):
            opened = stripped.removeprefix("elements = ")
            if opened.rstrip().endswith("}"):
                elements[block].update(_items(opened))
            else:
                pending, pending_set = [opened.strip()], elements[block]
            continue
        if stripped == "}":
            block = None
            if line == "}":
                table = None
            skeleton.append(line)
            continue
        words = stripped.split()
        if len(words) == 3 and words[0] in ("set", "map") and words[2] == "{":
            block = (*table, words[1])
            elements.setdefault(block, set())
            if words[0] == "map":
                maps.add(block)
        elif len(words) == 3 and words[0] == "chain" and words[1].startswith(_OWN_CHAIN_PREFIXES):
            block, in_chain = (*table, words[1]), True
            rules = chains.setdefault(block, [])  # a chain written twice holds both bodies
            continue
        skeleton.append(line)
    if pending is not None or table is not None or in_chain:
        raise ValueError("script: a block is not closed")
    return ScriptParts(
        tuple(skeleton),
        {path: frozenset(items) for path, items in elements.items()},
        frozenset(maps),
        {path: tuple(chain_rules) for path, chain_rules in chains.items()},
    )


def _items(text: str) -> list[str]:
    """The elements between the braces of `… { a, b }` (no element holds a comma or brace)."""
    inside = text[text.index("{") + 1 : text.rindex("}")]
    return [item.strip() for item in inside.split(",") if item.strip()]


def delta_script(old: ScriptParts, new: ScriptParts) -> str | None:
    """The transaction taking the kernel from `old` (as loaded) to `new`; "" when they are
    equal; None when their structure differs (load `new` whole)."""
    if old.skeleton != new.skeleton or old.elements.keys() != new.elements.keys():
        return None
    if old.maps != new.maps:
        return None
    lines: list[str] = []
    for path in sorted(new.chains):
        rules = new.chains[path]
        if path not in old.chains:
            lines.append(f"add chain {_where(path)}")
        elif old.chains[path] != rules:
            lines.append(f"flush chain {_where(path)}")
        else:
            continue
        lines += [f"add rule {_where(path)} {rule}" for rule in rules]
    for path in sorted(new.elements):
        gone = sorted(old.elements[path] - new.elements[path])
        if gone:
            keys = [_key(item) for item in gone] if path in new.maps else gone
            lines.append(f"delete element {_where(path)} {{ {', '.join(keys)} }}")
    for path in sorted(new.elements):
        added = sorted(new.elements[path] - old.elements[path])
        if added:
            lines.append(f"add element {_where(path)} {{ {', '.join(added)} }}")
    # Last: a chain can go only once no element jumps to it any more.
    lines += [f"delete chain {_where(path)}" for path in sorted(old.chains.keys() - new.chains)]
    return "".join(f"{line}\n" for line in lines)


def _where(path: SetPath) -> str:
    return " ".join(path)


def _key(map_item: str) -> str:
    """A map element's key: what `delete element` names it by."""
    return map_item.split(" : ", 1)[0]
