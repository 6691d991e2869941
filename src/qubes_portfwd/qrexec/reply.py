"""Our service's answer, framed as the Admin API frames replies (pure).

`0\\0` + payload, or `2\\0TYPE\\0\\0MESSAGE\\0`: the form qubesd writes on its sockets and
`client.connection.parse_reply` reads, so the qube's adapter decodes it as the lab's does.
qrexec ends a socket service's call with exit code 0 whatever it wrote: the frame says.
"""

OK_PREFIX = b"0\0"
ERROR_PREFIX = b"2\0"
MAX_MESSAGE = 400


def encode_ok(payload: bytes) -> bytes:
    return OK_PREFIX + payload


def encode_error(exc_type: str, message: str) -> bytes:
    """One line naming what was refused; `%` doubled as the client formats `message % ()`."""
    line = " ".join(message.replace("\0", " ").split())[:MAX_MESSAGE].replace("%", "%%")
    fields = (exc_type, "", line)
    return ERROR_PREFIX + b"".join(f.encode("ascii", "replace") + b"\0" for f in fields)
