"""Paths every layer agrees on (the socket is where Qubes' tools look for qubesd)."""

DEFAULT_SOCKET = "/run/qubes-portfwd/qubesd.sock"
