"""Our protocol over a qube's QubesDB (the port `ports.qube_db`): dom0's side, the qube's
side, and waiting on watches without polling."""
