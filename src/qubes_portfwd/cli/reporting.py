"""How every CLI fails: one line `PROG: error: …` on stderr and an exit code, never a traceback."""

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from ..client import QubesdError, ServiceNotRunning
from ..model.errors import ValidationError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """The command line itself is wrong (exit 2, as argparse does)."""


class CliParser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line and raises instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def print_error(prog: str, message: str) -> None:
    # A message from the service may span lines; the contract is one line.
    flat = " ".join(message.split())
    print(f"{prog}: error: {flat}", file=sys.stderr)


def describe_service_error(err: QubesdError) -> str:
    return err.message or err.exc_type


def run_reported(prog: str, body: Callable[[], int]) -> int:
    """Run a CLI body and turn every failure into one error line and an exit code."""
    try:
        return body()
    except UsageError as err:
        print_error(prog, str(err))
        return EXIT_USAGE
    except ValidationError as err:
        print_error(prog, str(err))
        return EXIT_USAGE
    except QubesdError as err:
        print_error(prog, describe_service_error(err))
        return EXIT_FAILURE
    except ServiceNotRunning as err:
        print_error(prog, f"{err}; is qubesd running? (QUBESD_SOCKET names its socket)")
        return EXIT_FAILURE
    except ConnectionError as err:
        print_error(prog, f"admin service connection failed: {err}")
        return EXIT_FAILURE
    except OSError as err:
        print_error(prog, f"{err.strerror or err}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SystemExit as exit_request:
        # argparse's --help ends here; its code is already right.
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_FAILURE
    except Exception as err:
        # The contract is no traceback, even for our own bugs; the type names the bug.
        print_error(prog, f"internal error: {type(err).__name__}: {err}")
        return EXIT_FAILURE
