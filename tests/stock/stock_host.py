"""Core-admin with our extension, each qube's namespace, and our agent in every qube."""

import subprocess
import sys
from dataclasses import dataclass

from qubes_lab.core_admin import StockQubesd


@dataclass
class StockHost:
    """Core-admin with our extension, each qube's namespace and our agent in every qube."""

    qubesd: StockQubesd
    names: dict[str, str]
    agents: dict[str, subprocess.Popen[bytes]]

    def start_agent(self, qube: str) -> None:
        side = self.qubesd.qube(qube)
        runtime = self.qubesd.workdir / "agents" / qube
        runtime.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "qubes_portfwd.agent", "--qube", qube,
                "--runtime-dir", str(runtime)]  # fmt: skip
        log = open(self.qubesd.workdir / f"agent-{qube}.log", "ab")  # noqa: SIM115
        self.agents[qube] = subprocess.Popen(
            side.command(argv), env=dict(side.env), stdout=log, stderr=log
        )

    def stop_agent(self, qube: str) -> None:
        process = self.agents.pop(qube)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
