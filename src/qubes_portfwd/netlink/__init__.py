"""The kernel's netlink notifications, shared by the programs that wake on them."""
