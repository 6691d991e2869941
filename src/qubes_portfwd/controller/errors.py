"""Errors the service sends back, named as Qubes names them so stock clients map them."""

from typing import ClassVar


class AdminError(Exception):
    """An error reply: `exc_type` is the name the client sees, the message is for people."""

    exc_type: ClassVar[str] = "QubesException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(AdminError):
    exc_type = "ProtocolError"


class PermissionDenied(AdminError):
    exc_type = "PermissionDenied"


class QubesVMNotFoundError(AdminError):
    exc_type = "QubesVMNotFoundError"

    def __init__(self, untrusted_name: str) -> None:
        shown = untrusted_name if untrusted_name.isprintable() and len(untrusted_name) < 64 else "?"
        super().__init__(f"No such domain: {shown!r}")


class QubesValueError(AdminError):
    exc_type = "QubesValueError"


class QubesNoSuchPropertyError(AdminError):
    exc_type = "QubesNoSuchPropertyError"


class QubesPropertyValueError(AdminError):
    exc_type = "QubesPropertyValueError"


class QubesFeatureNotFoundError(AdminError):
    exc_type = "QubesFeatureNotFoundError"
