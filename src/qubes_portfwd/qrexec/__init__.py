"""Our dom0 qrexec service `qubes.PortfwdNat`: network qubes ask for NAT traversal."""
