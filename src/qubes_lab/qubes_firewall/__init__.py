"""Qubes' outbound firewall, as the lab emulates it: core-admin's QubesDB entries in dom0
(`dom0.py`, `entries.py`) and the stock qubes-firewall worker in each network qube
(`worker.py`, `nft.py`). Not ours on a real host: the product never writes these."""
