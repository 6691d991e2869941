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


class _Splitter:
    """One pass over the compiler's own layout (see forwards.py, syntax.py)."""

    def __init__(self) -> None:
        self.skeleton: list[str] = []
        self.elements: dict[SetPath, set[str]] = {}
        self.maps: set[SetPath] = set()
        self.chains: dict[ChainPath, list[str]] = {}
        self.table: tuple[str, str] | None = None
        self.block: SetPath | None = None  # the set, map or own chain being read
        self.in_chain = False
        self.pending: list[str] | None = None  # an `elements = {` still open

    def feed(self, line: str) -> None:
        if self.pending is not None:
            self._continue_elements(line)
        elif self.table is None:
            self._top_level(line)
        else:
            self._in_table(line)

    def _top_level(self, line: str) -> None:
        words = line.split()
        if line.startswith("delete rule "):
            return  # our jumps by handle: the handles change at every full load
        if line.startswith("add element "):
            path = (words[2], words[3], words[4])
            self.elements.setdefault(path, set()).update(_items(line))
            return
        if line.startswith("table ") and line.endswith(" {"):
            self.table = (words[1], words[2])
        self.skeleton.append(line)

    def _in_table(self, line: str) -> None:
        assert self.table is not None
        stripped = line.strip()
        if self.block is not None and self.in_chain:
            if stripped == "}":
                self.block, self.in_chain = None, False
            else:
                self.chains[self.block].append(stripped)
            return
        if self.block is not None and stripped.startswith("elements = {"):
            self.pending = []
            self._continue_elements(stripped.removeprefix("elements = "))
            return
        if stripped == "}":
            self.block = None
            if line == "}":
                self.table = None
            self.skeleton.append(line)
            return
        words = stripped.split()
        if len(words) == 3 and words[0] in ("set", "map") and words[2] == "{":
            self.block = (*self.table, words[1])
            self.elements.setdefault(self.block, set())
            if words[0] == "map":
                self.maps.add(self.block)
        elif len(words) == 3 and words[0] == "chain" and words[1].startswith(_OWN_CHAIN_PREFIXES):
            self.block, self.in_chain = (*self.table, words[1]), True
            self.chains.setdefault(self.block, [])  # a chain written twice holds both bodies
            return
        self.skeleton.append(line)

    def _continue_elements(self, line: str) -> None:
        assert self.pending is not None and self.block is not None
        self.pending.append(line.strip())
        if line.rstrip().endswith("}"):
            self.elements[self.block].update(_items(" ".join(self.pending)))
            self.pending = None

    def parts(self) -> ScriptParts:
        if self.pending is not None or self.table is not None or self.in_chain:
            raise ValueError("script: a block is not closed")
        return ScriptParts(
            tuple(self.skeleton),
            {path: frozenset(items) for path, items in self.elements.items()},
            frozenset(self.maps),
            {path: tuple(rules) for path, rules in self.chains.items()},
        )


def _items(text: str) -> list[str]:
    """The elements between the braces of `… { a, b }` (no element holds a comma or brace)."""
    inside = text[text.index("{") + 1 : text.rindex("}")]
    return [item.strip() for item in inside.split(",") if item.strip()]


def split_script(script: str) -> ScriptParts:
    """The parts of a script `compile_qube` wrote; ValueError for any other text."""
    splitter = _Splitter()
    for line in script.splitlines():
        if line and not line.startswith("#"):
            splitter.feed(line)
    return splitter.parts()


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
