"""qrexec-daemon's policy program for tests: Qubes' own qrexec-policy-exec request handling
(`handle_request`, pinned qubes-core-qrexec) over a policy folder, with the host's qubes
given as a JSON file instead of asked from qubesd (which this host has not).

Environment: PYTHONPATH holds the qrexec sources, PORTFWD_POLICY_DIR, PORTFWD_SYSTEM_INFO.
"""

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from qrexec.policy import parser
from qrexec.tools import qrexec_policy_exec


class Policies:
    """What handle_request asks a policy cache for: the files, read at each call."""

    def get_policy(self) -> parser.FilePolicy:
        return parser.FilePolicy(policy_path=Path(os.environ["PORTFWD_POLICY_DIR"]))


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    source, target, service_and_argument = args
    system = json.loads(Path(os.environ["PORTFWD_SYSTEM_INFO"]).read_text())
    for info in list(system["domains"].values()):
        system["domains"]["uuid:" + info["uuid"]] = info
    result = asyncio.run(
        qrexec_policy_exec.handle_request(
            source,
            target,
            service_and_argument,
            logging.getLogger("policy"),
            policy_cache=Policies(),
            system_info=system,
        )
    )
    sys.stdout.write(result + "\n")
    # As qrexec-policy-exec: 0 only for an allow, which the daemon then carries out.
    return 0 if "result=allow" in result.split("\n") else 1


if __name__ == "__main__":
    sys.exit(main())
