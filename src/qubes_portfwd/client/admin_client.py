"""The typed Admin API client every front end uses (no front end talks to the socket itself).

It uses only methods a stock qubesd has, plus the controller's status document: a forward
is the feature `portfwd.<id>` of its target (forwards.py), its live status is read from the
document (status_reader.py).
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..model.forward_status import ForwardStatus
from ..model.nat_policy_feature import FEATURE_POLICY, join_lines, split_value
from ..model.status_document import StatusDocument, forwards_through
from . import forwards as forward_features
from .connection import (
    ProtocolViolation,
    QubesdError,
    call,
    default_prompt_socket_path,
    default_socket_path,
)
from .status_reader import default_status_path, read_status

ADMIN_VM = "dom0"


@dataclass(frozen=True)
class QubeInfo:
    name: str
    klass: str
    state: str


@dataclass(frozen=True)
class PropertyValue:
    is_default: bool
    type: str
    value: str


def _parse_property(untrusted_text: str) -> PropertyValue:
    default_part, type_part, value = [*untrusted_text.split(" ", 2), "", ""][:3]
    if not default_part.startswith("default=") or not type_part.startswith("type="):
        raise ProtocolViolation(f"malformed property reply {untrusted_text[:80]!r}")
    return PropertyValue(default_part == "default=True", type_part[len("type=") :], value)


def _unescape(line: str) -> str:
    out = []
    chars = iter(line)
    for char in chars:
        if char == "\\":
            out.append("\n" if next(chars, "") == "n" else "\\")
        else:
            out.append(char)
    return "".join(out)


class AdminClient:
    """`socket_path` defaults to `$QUBESD_SOCKET`, else /run/qubes-portfwd/qubesd.sock.

    `status_path` (the controller's status document) defaults to `$QUBES_PORTFWD_STATUS`,
    else status.json beside the socket (/run/qubes-portfwd/status.json by default).
    `source` is the caller's name: dom0 for dom0's tools, a qube's name on its qrexec socket.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        timeout: float = 120.0,
        source: str = "dom0",
        status_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path else default_socket_path()
        self.timeout = timeout
        self.source = source
        self.status_path = (
            Path(status_path) if status_path else default_status_path(self.socket_path)
        )
        self.prompt_socket_path = default_prompt_socket_path(self.socket_path)

    def call(self, dest: str, method: str, arg: str = "", payload: bytes = b"") -> bytes:
        return call(self.socket_path, dest, method, arg, payload, self.timeout, self.source)

    def _text(self, dest: str, method: str, arg: str = "") -> str:
        return self.call(dest, method, arg).decode("utf-8")

    # -- qubes and properties --

    def list_qubes(self) -> list[QubeInfo]:
        qubes = []
        for line in self._text(ADMIN_VM, "admin.vm.List").splitlines():
            name, _, rest = line.partition(" ")
            fields = dict(item.split("=", 1) for item in rest.split(" ") if "=" in item)
            qubes.append(QubeInfo(name, fields.get("class", ""), fields.get("state", "")))
        return qubes

    def get_property(self, qube: str, prop: str) -> PropertyValue:
        return _parse_property(self._text(qube, "admin.vm.property.Get", prop))

    def get_all_properties(self, qube: str) -> dict[str, PropertyValue]:
        values = {}
        for line in self._text(qube, "admin.vm.property.GetAll").splitlines():
            name, _, rest = _unescape(line).partition(" ")
            values[name] = _parse_property(rest)
        return values

    def list_properties(self, qube: str) -> list[str]:
        return self._text(qube, "admin.vm.property.List").splitlines()

    def set_property(self, qube: str, prop: str, value: str) -> None:
        self.call(qube, "admin.vm.property.Set", prop, value.encode("utf-8"))

    def reset_property(self, qube: str, prop: str) -> None:
        self.call(qube, "admin.vm.property.Reset", prop)

    # -- features --

    def get_feature(self, qube: str, name: str) -> str:
        return self._text(qube, "admin.vm.feature.Get", name)

    def set_feature(self, qube: str, name: str, value: str) -> None:
        self.call(qube, "admin.vm.feature.Set", name, value.encode("utf-8"))

    def list_features(self, qube: str) -> list[str]:
        return self._text(qube, "admin.vm.feature.List").splitlines()

    def remove_feature(self, qube: str, name: str) -> None:
        self.call(qube, "admin.vm.feature.Remove", name)

    # -- firewall (accept/drop rules only, as stock qubesd) --

    def firewall_get(self, qube: str) -> list[str]:
        return self._text(qube, "admin.vm.firewall.Get").splitlines()

    def firewall_set(self, qube: str, lines: Iterable[str]) -> None:
        payload = "".join(f"{line}\n" for line in lines).encode("utf-8")
        self.call(qube, "admin.vm.firewall.Set", payload=payload)

    def firewall_reload(self, qube: str) -> None:
        self.call(qube, "admin.vm.firewall.Reload")

    # -- forwards: features `portfwd.<id>`, statuses from the status document --

    def status(self, *, with_forwards: bool = True) -> StatusDocument:
        """The controller's status document as written after its last publish (without its
        forwards unless `with_forwards`: the boot id and the qubes' paths alone)."""
        return read_status(self.status_path, with_forwards=with_forwards)

    def forwards(self) -> list[ForwardStatus]:
        return list(self.status().forwards)

    def forwards_of(self, qube: str) -> list[ForwardStatus]:
        """The target's view: forwards to `qube`."""
        return [f for f in self.status().forwards if f.target == qube]

    def forwards_through(self, qube: str) -> list[ForwardStatus]:
        """A network qube's view: forwards whose path passes through `qube`."""
        return forwards_through(self.status().forwards, qube)

    def forward_ids(self, qube: str) -> list[str]:
        """The ids of the forwards stored for `qube` (its `portfwd.<id>` features)."""
        return forward_features.stored_ids(self.list_features(qube))

    def add_forward(self, qube: str, line: str) -> str:
        """Store one forward as the feature `portfwd.<id>` of `qube`; returns its id.

        The line is completed here (its path, its boot) because the service may only
        refuse a feature value, never rewrite it.
        """
        return forward_features.add(self, qube, line)

    def rebind(self, qube: str, forward_id: str) -> None:
        """Record `qube`'s path now as the forward's `via` (it was made for another path)."""
        forward_features.rebind(self, qube, forward_id)

    def remove_forward(self, qube: str, forward_id: str) -> None:
        forward_features.remove(self, qube, forward_id)

    def replace_forward(self, qube: str, forward_id: str, line: str) -> str:
        """An edited forward in place of `forward_id`; returns its (maybe new) id."""
        return forward_features.replace_forward(self, qube, forward_id, line)

    # -- NAT traversal (the network qube's daemon asks; the user decides pending asks) --

    def nat_request(self, netvm: str, line: str) -> dict[str, str]:
        """Ask for (or renew, or with lifetime=0 remove) a mapping; the reply's fields."""
        return nat_fields(self._call_text(netvm, "admin.vm.portfwd.NatRequest", line))

    def nat_address(self, netvm: str, client: str) -> str:
        """The outside address the world reaches `client` (a qube behind `netvm`) at."""
        return self._text(netvm, "admin.vm.portfwd.NatAddress", client).strip()

    def _prompt_call(self, method: str, arg: str = "") -> str:
        """One of dom0's prompt methods, on the socket that serves them (see connection)."""
        reply = call(self.prompt_socket_path, ADMIN_VM, method, arg, b"", self.timeout, self.source)
        return reply.decode("utf-8")

    def nat_pending(self) -> list[dict[str, str]]:
        text = self._prompt_call("admin.portfwd.Pending")
        return [nat_fields(line) for line in text.splitlines() if line.strip()]

    def nat_approve(self, request_id: str) -> dict[str, str]:
        return nat_fields(self._prompt_call("admin.portfwd.Approve", request_id))

    def nat_deny(self, request_id: str) -> None:
        self._prompt_call("admin.portfwd.Deny", request_id)

    def nat_policy_get(self, qube: str) -> list[str]:
        """`qube`'s NAT policy lines (its feature `portfwd-nat-policy`); none set: []."""
        try:
            return split_value(self.get_feature(qube, FEATURE_POLICY))
        except QubesdError as err:
            if err.exc_type == "QubesFeatureNotFoundError":
                return []
            raise

    def nat_policy_set(self, qube: str, lines: Iterable[str]) -> None:
        """Replace `qube`'s NAT policy in one feature Set (checked whole by the service);
        no lines: the feature goes, and every port asks again."""
        value = join_lines(lines)
        if value:
            self.set_feature(qube, FEATURE_POLICY, value)
            return
        try:
            self.remove_feature(qube, FEATURE_POLICY)
        except QubesdError as err:
            if err.exc_type != "QubesFeatureNotFoundError":
                raise

    def _call_text(self, dest: str, method: str, payload: str) -> str:
        return self.call(dest, method, payload=payload.encode("ascii")).decode("utf-8")


def nat_fields(untrusted_line: str) -> dict[str, str]:
    """`key=value …[description=free text]` as a dict (the NAT methods' reply form)."""
    head, has_description, description = untrusted_line.strip().partition("description=")
    fields = dict(word.split("=", 1) for word in head.split() if "=" in word)
    if has_description:
        fields["description"] = description
    return fields
