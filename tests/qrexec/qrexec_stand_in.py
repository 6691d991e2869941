"""Plays qrexec for `qrexec-client-vm TARGET SERVICE+ARG` to a socket-based dom0 service.

What qrexec-daemon does once its policy allowed a call to dom0 (qubes-core-qrexec,
daemon/qrexec-daemon.c `handle_execute_service_child`, libqrexec/exec.c
`find_qrexec_service`): connect to the service's socket, write `SERVICE+ARG SOURCE TYPE
TARGET` and a NUL (a missing argument becomes a bare `+`; TYPE `keyword` for `@adminvm`,
`name` otherwise), then the caller's stdin; the service's output is the caller's stdout, and
the caller exits 0 (a socket service has no exit code). `--refuse`: the policy said no (126).
`--header` sends those bytes instead of the header (a forgery), `--source` names the caller.
"""

import argparse
import socket
import sys

EXIT_PROBLEM, EXIT_REFUSED = 125, 126


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--refuse", action="store_true")
    parser.add_argument("--header", default=None)
    parser.add_argument("target")
    parser.add_argument("service")
    args = parser.parse_args()
    if args.refuse:
        print("Request refused", file=sys.stderr)
        return EXIT_REFUSED
    descriptor = args.service if "+" in args.service else f"{args.service}+"
    kind, name = ("keyword", args.target[1:]) if args.target[0] == "@" else ("name", args.target)
    header = f"{descriptor} {args.source} {kind} {name}".encode("ascii")
    if args.header is not None:
        header = args.header.encode("ascii")
    payload = sys.stdin.buffer.read()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    try:
        sock.connect(args.socket)
    except OSError as err:
        print(f"qrexec_stand_in: {args.socket}: {err}", file=sys.stderr)
        return EXIT_PROBLEM
    try:
        try:
            sock.sendall(header + b"\0" + payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service refused early; its answer is still to be read
        while chunk := sock.recv(65536):
            sys.stdout.buffer.write(chunk)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
