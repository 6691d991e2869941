"""The Admin API client library: every front end talks to the admin service through it."""

from ..model.forward_status import ForwardState, ForwardStatus, HopState, HopStatus
from .admin_client import AdminClient, PropertyValue, QubeInfo
from .connection import AccessDenied, ProtocolViolation, QubesdError, ServiceNotRunning

__all__ = [
    "AccessDenied",
    "AdminClient",
    "ForwardState",
    "ForwardStatus",
    "HopState",
    "HopStatus",
    "PropertyValue",
    "ProtocolViolation",
    "QubeInfo",
    "QubesdError",
    "ServiceNotRunning",
]
