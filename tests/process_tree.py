"""This test process's child processes, as the leak and recovery tests count them."""

import os


def children() -> list[tuple[int, str]]:
    """(pid, state) of this process's child processes.

    multiprocessing's resource tracker is left out: Python starts it once per process at
    the first ``spawn`` (the distributed tests start their hosts that way) and keeps it
    until the interpreter exits; it belongs to no engine or DPU set.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"multiprocessing.resource_tracker" not in cmdline:
            found.append((int(entry), fields[0]))
    return found
