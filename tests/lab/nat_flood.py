"""A qube flooding its netvm's natd, for the fairness lab test: NAT-PMP and PCP mapping
requests (each for another port, so each is new) as fast as one socket sends them, and UPnP
AddPortMapping calls on parallel connections. Counts what came back, by result code.

Run with the system's python3 inside a lab namespace (no project imports):

    nat_flood.py GATEWAY CLIENT_ADDRESS CONTROL_URL REPORT_FILE STOP_FILE MAX_SECONDS

Every REPORT_INTERVAL it rewrites REPORT_FILE (JSON) with the counts so far; it stops when
STOP_FILE exists or after MAX_SECONDS, writes the final counts with "done": true, and exits.
"""

import http.client
import ipaddress
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections import Counter

NATPMP_PORT = 5351
REPORT_INTERVAL = 0.2
UPNP_THREADS = 8
UPNP_TIMEOUT = 8.0
FIRST_PORT = 30000
PORTS = 20000
WANIP = "urn:schemas-upnp-org:service:WANIPConnection:1"
ERROR_CODE = re.compile(rb"<errorCode>(\d+)</errorCode>")


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: Counter[str] = Counter()
        self.answers: dict[str, Counter[str]] = {"natpmp": Counter(), "pcp": Counter()}
        self.upnp: Counter[str] = Counter()

    def snapshot(self, done: bool) -> dict[str, object]:
        with self.lock:
            return {
                "sent": dict(self.sent),
                "natpmp": dict(self.answers["natpmp"]),
                "pcp": dict(self.answers["pcp"]),
                "upnp": dict(self.upnp),
                "done": done,
            }


def natpmp_request(port: int) -> bytes:
    return struct.pack("!BBHHHI", 0, 2, 0, port, port, 3600)  # map TCP, suggested = private


def pcp_request(client: str, port: int) -> bytes:
    mapped = ipaddress.IPv6Address(f"::ffff:{client}").packed
    header = struct.pack("!BBHI16s", 2, 1, 0, 3600, mapped)
    body = struct.pack("!12sB3sHH16s", os.urandom(12), 6, bytes(3), port, 0, bytes(16))
    return header + body


def record_reply(counts: Counts, data: bytes) -> None:
    if len(data) >= 4 and data[0] == 0:  # NAT-PMP: version 0, result at bytes 2-3
        kind, code = "natpmp", struct.unpack("!H", data[2:4])[0]
    elif len(data) >= 4 and data[0] == 2:  # PCP: result at byte 3
        kind, code = "pcp", data[3]
    else:
        return
    with counts.lock:
        counts.answers[kind][str(code)] += 1


def udp_flood(gateway: str, client: str, counts: Counts, stop: threading.Event) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    n = 0
    while not stop.is_set():
        port = FIRST_PORT + n % PORTS
        for kind, datagram in (
            ("natpmp", natpmp_request(port)),
            ("pcp", pcp_request(client, port)),
        ):
            try:
                sock.sendto(datagram, (gateway, NATPMP_PORT))
            except BlockingIOError:
                continue
            with counts.lock:
                counts.sent[kind] += 1
        n += 1
        while True:
            try:
                record_reply(counts, sock.recv(2048))
            except BlockingIOError:
                break
    sock.close()


def upnp_body(client: str, port: int) -> bytes:
    arguments = {
        "NewRemoteHost": "",
        "NewExternalPort": port,
        "NewProtocol": "TCP",
        "NewInternalPort": port,
        "NewInternalClient": client,
        "NewEnabled": 1,
        "NewPortMappingDescription": "flood",
        "NewLeaseDuration": 3600,
    }
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in arguments.items())
    return (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<s:Body><u:AddPortMapping xmlns:u="{WANIP}">{inner}</u:AddPortMapping>'
        "</s:Body></s:Envelope>"
    ).encode()


def upnp_flood(
    control: str, client: str, worker: int, counts: Counts, stop: threading.Event
) -> None:
    url = urllib.parse.urlsplit(control)
    n = 0
    while not stop.is_set():
        port = FIRST_PORT + PORTS + (worker * 1000 + n) % 10000
        n += 1
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=UPNP_TIMEOUT)
        try:
            headers = {
                "Content-Type": 'text/xml; charset="utf-8"',
                "SOAPAction": f'"{WANIP}#AddPortMapping"',
            }
            connection.request("POST", url.path, upnp_body(client, port), headers)
            response = connection.getresponse()
            body = response.read()
            found = ERROR_CODE.search(body)
            outcome = (
                f"{response.status}/{found.group(1).decode()}" if found else str(response.status)
            )
        except OSError as err:
            outcome = type(err).__name__
        finally:
            connection.close()
        with counts.lock:
            counts.sent["upnp"] += 1
            counts.upnp[outcome] += 1


def write_report(path: str, report: dict[str, object]) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        json.dump(report, out)
    os.replace(temporary, path)


def main() -> None:
    gateway, client, control, report, stop_file, max_seconds = sys.argv[1:7]
    counts, stop = Counts(), threading.Event()
    workers = [threading.Thread(target=udp_flood, args=(gateway, client, counts, stop))]
    workers += [
        threading.Thread(target=upnp_flood, args=(control, client, n, counts, stop))
        for n in range(UPNP_THREADS)
    ]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + float(max_seconds)
    try:
        while not os.path.exists(stop_file) and time.monotonic() < deadline:
            write_report(report, counts.snapshot(done=False))
            time.sleep(REPORT_INTERVAL)
    finally:
        stop.set()
        for worker in workers:
            worker.join(UPNP_TIMEOUT + 2)
        write_report(report, counts.snapshot(done=True))


if __name__ == "__main__":
    main()
