#!/usr/bin/env python3
"""Checksum over several DPUs, written for the UPMEM SDK's Python host API.

Only the SDK's ``dpu`` package and the standard library are used, so the same
file runs on real DPUs, on the SDK's simulator and on the updlrm emulator
(``PYTHONPATH=$(updlrm emu python-path)``).

Usage: checksum_host.py <dpu_binary> [nr_dpus] [nr_tasklets] [seed]
"""

import io
import random
import struct
import sys

from dpu import ALLOCATE_ALL, DpuError, DpuSet

BUFFER_BYTES = 1 << 18


def fail(message):
    print(f"check failed: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "./bin/dpu_code"
    nr_dpus = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    nr_tasklets = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 42)
    if ALLOCATE_ALL != 0xFFFFFFFF:
        fail("ALLOCATE_ALL")

    with DpuSet(nr_dpus=nr_dpus, binary=binary) as dpus:
        if len(dpus) != nr_dpus or len(dpus.dpus()) != nr_dpus:
            fail(f"{len(dpus)} DPUs allocated, asked for {nr_dpus}")
        # the same byte count everywhere (attribute assignment broadcasts) ...
        nr_bytes = BUFFER_BYTES - 8 * rng.randrange(1, 1000)
        dpus.nr_bytes = bytearray(struct.pack("<I", nr_bytes))
        # ... and different bytes per DPU (a list scatters one buffer per DPU)
        data = [bytearray(rng.getrandbits(8) for _ in range(nr_bytes)) for _ in range(nr_dpus)]
        data[0][:] = b"\xff" * nr_bytes  # the largest sum
        dpus.copy("buffer", data)
        dpus.exec()

        sums = [bytearray(4) for _ in range(nr_dpus)]
        dpus.copy(sums, "checksum")
        for i, (got, sent) in enumerate(zip(sums, data)):
            expected = sum(sent) & 0xFFFFFFFF
            if struct.unpack("<I", got)[0] != expected:
                fail(f"DPU {i}: checksum 0x{struct.unpack('<I', got)[0]:08x}, expected 0x{expected:08x}")
        # reading a symbol attribute gathers it from every DPU (one DPU: the value itself)
        gathered = dpus.checksum.uint32()
        gathered = gathered if nr_dpus > 1 else [gathered]
        if gathered != [sum(d) & 0xFFFFFFFF for d in data]:
            fail(f"dpus.checksum.uint32() = {gathered}")
        for i, dpu in enumerate(dpus):
            partials = dpu.partial.uint32()
            partials = partials if isinstance(partials, list) else [partials]
            if len(partials) != nr_tasklets or sum(partials) & 0xFFFFFFFF != sum(data[i]) & 0xFFFFFFFF:
                fail(f"DPU {i}: partial sums {partials}")

        log = io.StringIO()
        dpus.log(log)
        text = log.getvalue()
        if text.count("=== DPU#0x") != nr_dpus or text.count(f"over {nr_bytes} bytes") != nr_dpus:
            fail(f"log:\n{text}")

        # an asynchronous run, then the wait; a one-DPU set copies into a single buffer
        dpus.nr_bytes = bytearray(struct.pack("<I", 8))
        dpus.exec(async_mode=True)
        dpus.sync()
        first = bytearray(4)
        dpus.dpus()[nr_dpus - 1].copy(first, "checksum")
        if struct.unpack("<I", first)[0] != sum(data[nr_dpus - 1][:8]):
            fail("asynchronous run")

        try:
            dpus.copy("no_such_symbol", bytearray(4))
        except DpuError:
            pass
        else:
            fail("copy to an unknown symbol did not raise DpuError")

    print(f"python_checksum: {nr_dpus} DPUs x {nr_tasklets} tasklets OK")


if __name__ == "__main__":
    main()
