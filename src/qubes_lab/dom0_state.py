"""dom0's state in a lab, as `up` reads it: which topology the host is made from, and the
qubes as dom0 has them now (a host starts each qube with dom0's current properties)."""

import json
from pathlib import Path
from typing import Any

from qubes_lab.qubesd.state import TOPOLOGY_FILE
from qubes_lab.qubesd.topology_json import qube_to_json, topology_from_json
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.topology import Topology

from .topology_file import default_topology_text


def topology_text(lab: str, given: str | None, recorded: str | None) -> str:
    """The topology `up` builds: the one the lab was made from, unless another one is given.

    dom0's state belongs to the host it was made for: building another host on it is
    refused, and only an explicit purge makes room for one.
    """
    if given is None:
        return default_topology_text() if recorded is None else recorded
    if recorded is not None and given != recorded:
        raise ValidationError(
            "topology",
            f"lab {lab} was made from another topology and keeps dom0's state for it: "
            f"give no --topology (or that file), or run `qubes-lab --lab {lab} down --purge` "
            "first, which deletes dom0's state",
        )
    return given


def read_current(dom0_dir: Path) -> Topology | None:
    """The qubes as dom0 has them now; None when there is no dom0 state yet."""
    path = dom0_dir / TOPOLOGY_FILE
    try:
        untrusted_document = json.loads(path.read_bytes())
        return topology_from_json(untrusted_document["current"])
    except FileNotFoundError:
        return None
    except ValidationError:
        raise
    except (ValueError, KeyError, TypeError):
        raise ValidationError("dom0 state", f"{path}: expected the admin service's JSON") from None


def differences(built: Topology, dom0: Topology | None) -> tuple[dict[str, Any], ...]:
    """The qubes whose properties in dom0 differ from the topology file's, as dom0 has them."""
    if dom0 is None:
        return ()
    if set(dom0.qubes) != set(built.qubes):
        raise ValidationError(
            "dom0 state",
            f"its qubes ({', '.join(sorted(dom0.qubes))}) are not the topology's "
            f"({', '.join(sorted(built.qubes))}): purge it (`down --purge`) to build this one",
        )
    return tuple(
        qube_to_json(dom0[name]) for name in sorted(dom0.qubes) if dom0[name] != built[name]
    )
