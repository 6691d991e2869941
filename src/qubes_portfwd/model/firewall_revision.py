"""A guarded rule-list write over stock methods: which list a writer read, kept as a feature.

`admin.vm.firewall.Set` replaces a qube's whole list and takes no argument, so a writer that
read the list first says which list it read by setting the feature
`portfwd-firewall-base.<digest of the list it sends>.<nonce>` = `<digest of the list it
read> <time>` just before the Set, and removes it after. The service, seeing a Set whose list
has such features, refuses it unless one of them was written from the current list: a
concurrent change is detected, not overwritten. Writers that set none (stock tools) keep
stock behaviour. The nonce keeps two writers that send the same list from sharing a guard.
Both digests are of the list's canonical text (`canonical_text`): Qubes stores a rule in its
own spelling (`dstports=443` comes back as `dstports=443-443`), so a guard names the rules,
not how one writer spelled them.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ValidationError
from .rule_text import format_rule, parse_rule

FEATURE_PREFIX = "portfwd-firewall-base."
# A writer that died between its feature and its Set leaves the feature; older ones are dropped.
STALE_AFTER = 300.0
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_DIGEST_LEN = 24


def rules_text(lines: Iterable[str]) -> str:
    """The Set payload and the Get answer for these rule lines: one line each, newline-ended."""
    return "".join(f"{line}\n" for line in lines if line.strip())


def canonical_text(lines: Iterable[str]) -> str:
    """The rule list as `rules_text`, each line in our one spelling; a line that does not parse
    stays as written (the Set refuses it anyway)."""
    spelled = []
    for line in lines:
        if not line.strip():
            continue
        try:
            spelled.append(format_rule(parse_rule(line)))
        except ValidationError:
            spelled.append(line.strip())
    return rules_text(spelled)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("ascii", errors="replace")).hexdigest()


def guard_prefix(new_text: str) -> str:
    """The start of every guard naming a Set of this list."""
    return f"{FEATURE_PREFIX}{digest(new_text)[:_NAME_DIGEST_LEN]}."


def feature_name(new_text: str, nonce: str) -> str:
    """One writer's guard for a Set of this list."""
    return guard_prefix(new_text) + nonce


@dataclass(frozen=True)
class BaseRevision:
    """What a guarded writer read: the digest of that list, and when it said so."""

    base: str
    said_at: float

    def format(self) -> str:
        return f"{self.base} {self.said_at:.3f}"

    @classmethod
    def parse(cls, untrusted_value: str) -> "BaseRevision":
        words = untrusted_value.split(" ")
        if len(words) != 2 or not _DIGEST_RE.match(words[0]):
            raise ValidationError(
                "portfwd-firewall-base", "expected '<sha256 hex of the list read> <unix time>'"
            )
        try:
            said_at = float(words[1])
        except ValueError:
            raise ValidationError("portfwd-firewall-base", "time: expected seconds") from None
        return cls(words[0], said_at)


def is_stale(untrusted_value: str, now: float) -> bool:
    try:
        return now - BaseRevision.parse(untrusted_value).said_at > STALE_AFTER
    except ValidationError:
        return True
