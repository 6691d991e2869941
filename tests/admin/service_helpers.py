"""The suite's admin service helpers now live in `tests/admin_service.py`: this name stays only
for modules still being edited elsewhere (tests/admin/test_nat_*.py); import `admin_service`."""

from admin_service import BOOT_ID, RunningService, make_service, wait_until

__all__ = ["BOOT_ID", "RunningService", "make_service", "wait_until"]
