"""The lab's QubesDB stand-in answers prefix reads from its ordered keys as a scan of all would."""

import random
from pathlib import Path

from qubes_lab.qube_db import FileQubeDb

PATHS = ["/a", "/a/b", "/a/b/c", "/a/bc", "/ab", "/b", "/b/", "/b/x", "/qubes-portfwd/1/4"]
PREFIXES = ["/", "/a", "/a/", "/a/b", "/ab", "/b/", "/c", "/qubes-portfwd/"]


def test_prefix_reads_and_lists_match_a_scan_after_random_writes_and_removals(
    tmp_path: Path,
) -> None:
    writer, reader = FileQubeDb(tmp_path), FileQubeDb(tmp_path)
    model: dict[str, bytes] = {}
    draw = random.Random(17)
    for step in range(400):
        path = draw.choice(PATHS)
        if draw.random() < 0.6:
            value = str(step).encode()
            writer.write(path, value)
            model[path] = value
        elif path.endswith("/") or draw.random() < 0.5:
            subtree = path if path.endswith("/") else path + "/"
            writer.rm(subtree)
            model = {k: v for k, v in model.items() if not k.startswith(subtree)}
        else:
            writer.rm(path)
            model.pop(path, None)
        prefix = draw.choice(PREFIXES)
        scan = {k: v for k, v in sorted(model.items()) if k.startswith(prefix)}
        assert reader.multiread(prefix) == scan
        assert list(reader.multiread(prefix)) == list(scan)
        assert reader.list(prefix) == list(scan)
