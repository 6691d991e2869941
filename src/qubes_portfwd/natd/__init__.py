"""qubes-portfwd-natd: NAT-PMP, PCP and UPnP IGD answered in a network qube, decided in dom0."""
