"""Port ranges as Qubes writes them (`80`, `80-90`; always sent back as `A-B`)."""

from dataclasses import dataclass

from .errors import ValidationError

PORT_FORM = "a port 1-65535 or a range N-M with N <= M"


@dataclass(frozen=True, order=True, slots=True)
class PortRange:
    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= 65535:
            raise ValueError(f"bad port range {self.first}-{self.last}")

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def overlaps(self, other: "PortRange") -> bool:
        return self.first <= other.last and other.first <= self.last

    @property
    def text(self) -> str:
        """The Admin API form: always `A-B`, as Qubes sends dstports."""
        return f"{self.first}-{self.last}"

    @property
    def short(self) -> str:
        """The form people read: `80` or `80-90`."""
        return str(self.first) if self.first == self.last else self.text

    def offset_to(self, other: "PortRange") -> int:
        """How far `other` is shifted from this range (for remapping port by port)."""
        return other.first - self.first


def parse_port_range(field: str, untrusted_value: str, *, lowest: int = 1) -> PortRange:
    """Validate `N` or `N-M`; `lowest` is 0 for Qubes' own dstports, 1 for forwards."""
    parts = untrusted_value.split("-")
    if len(parts) > 2 or not all(p.isdigit() and p.isascii() and len(p) <= 5 for p in parts):
        raise ValidationError(field, f"{untrusted_value!r} is not {PORT_FORM}")
    first, last = int(parts[0]), int(parts[-1])
    for port in (first, last):
        if not lowest <= port <= 65535:
            raise ValidationError(
                field, f"port {port} is out of range; expected {lowest}-65535 ({PORT_FORM})"
            )
    if first > last:
        raise ValidationError(field, f"range {first}-{last} is reversed; write {last}-{first}")
    return PortRange(first, last)
