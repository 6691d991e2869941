"""The qubesd local wire protocol: request framing and reply encoding (pure).

A request is `METHOD+ARG SOURCE name DEST\\0` (ASCII) followed by the payload up to the
client's half-close. A reply is `0\\0` + payload, or
`2\\0ExceptionType\\0traceback\\0format\\0arg1\\0…argN\\0`; Qubes' client formats
`format % args`, so a message sent without args has its `%` doubled.
"""

import re
from dataclasses import dataclass

MAX_HEADER = 256
MAX_PAYLOAD = 1 << 20
OK_PREFIX = b"0\0"
ERROR_PREFIX = b"2\0"

_METHOD_RE = re.compile(r"^[a-z][A-Za-z0-9_.]{0,99}$")
_ARG_RE = re.compile(r"^[A-Za-z0-9_.:@+-]{0,100}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")


class FramingError(ValueError):
    """The request does not follow the framing; the text says how."""


@dataclass(frozen=True)
class Request:
    method: str
    arg: str
    source: str
    dest: str
    untrusted_payload: bytes


def split_header(untrusted_data: bytes) -> tuple[bytes, bytes] | None:
    """(header, rest) once the header's NUL has arrived; None while it may still come."""
    end = untrusted_data.find(b"\0", 0, MAX_HEADER + 1)
    if end >= 0:
        return untrusted_data[:end], untrusted_data[end + 1 :]
    if len(untrusted_data) > MAX_HEADER:
        raise FramingError(f"header longer than {MAX_HEADER} bytes or missing its NUL")
    return None


def parse_header(untrusted_header: bytes) -> tuple[str, str, str, str]:
    """`METHOD+ARG SOURCE name DEST` to (method, arg, source, dest), checked."""
    try:
        untrusted_text = untrusted_header.decode("ascii")
    except UnicodeDecodeError:
        raise FramingError("header is not ASCII") from None
    parts = untrusted_text.split(" ")
    if len(parts) != 4:
        raise FramingError("header must be 'METHOD+ARG SOURCE name DEST'")
    untrusted_call, untrusted_source, untrusted_dest_type, untrusted_dest = parts
    untrusted_method, _, untrusted_arg = untrusted_call.partition("+")
    if untrusted_dest_type == "keyword" and untrusted_dest == "adminvm":
        untrusted_dest_type, untrusted_dest = "name", "dom0"
    if untrusted_dest_type != "name":
        raise FramingError("only destinations of type 'name' are supported")
    if not _METHOD_RE.match(untrusted_method):
        raise FramingError("method name: letters, digits, '.' and '_' only")
    if not _ARG_RE.match(untrusted_arg):
        raise FramingError("argument: letters, digits and _.:@+- only, at most 100")
    if not _NAME_RE.match(untrusted_source) or not _NAME_RE.match(untrusted_dest):
        raise FramingError("source and destination must be qube names")
    return untrusted_method, untrusted_arg, untrusted_source, untrusted_dest


def parse_request(untrusted_data: bytes) -> Request:
    """A whole request (everything up to the client's EOF)."""
    split = split_header(untrusted_data)
    if split is None:
        raise FramingError("request ended before the header's NUL")
    untrusted_header, untrusted_payload = split
    if len(untrusted_payload) > MAX_PAYLOAD:
        raise FramingError(f"payload larger than {MAX_PAYLOAD} bytes")
    method, arg, source, dest = parse_header(untrusted_header)
    return Request(method, arg, source, dest, untrusted_payload)


def encode_ok(payload: bytes = b"") -> bytes:
    return OK_PREFIX + payload


def encode_error(exc_type: str, message: str, args: tuple[str, ...] = ()) -> bytes:
    """An error reply; without args the message is made safe for the client's `%`."""
    text = message if args else message.replace("%", "%%")
    fields = [exc_type, "", text, *args]
    return ERROR_PREFIX + b"".join(f.replace("\0", " ").encode("utf-8") + b"\0" for f in fields)
