#!/usr/bin/env python3
"""The UPMEM SDK's Python host API beyond a plain checksum: building the DPU
program from C source, rank allocation, ranks(), per-DPU and broadcast copies
with sizes and offsets, skipped DPUs (None buffers), DpuVariable views,
DpuProgram symbols, logs to a list of streams, call() per rank and once, and
DpuError on misuse.  Uses only the SDK's ``dpu`` package and the standard
library.

Usage: api_host.py <dpu_source.c> [nr_ranks]
"""

import array
import io
import struct
import sys

from dpu import DpuError, DpuSet, DpuSymbol


def check(condition, message):
    if not condition:
        print(f"check failed: {message}", file=sys.stderr)
        sys.exit(1)


def main():
    source = sys.argv[1]
    nr_ranks = int(sys.argv[2]) if len(sys.argv) > 2 else 1

    with DpuSet(nr_ranks=nr_ranks, c_source=source) as dpus:
        n = len(dpus)
        check(n >= nr_ranks and len(dpus.ranks()) == nr_ranks, f"{n} DPUs in {len(dpus.ranks())} ranks")
        check(sum(len(rank) for rank in dpus.ranks()) == n, "ranks do not partition the DPUs")

        dpus.factor = bytearray(struct.pack("<i", -3))
        dpus.copy("count", bytearray(struct.pack("<I", 5)))
        values = [array.array("i", [d * 100 + i for i in range(64)]) for d in range(n)]
        dpus.copy("values", [bytearray(v.tobytes()) for v in values])
        # DPU 0 gets other values in its words 2..3 only (offset and size)
        dpus.dpus()[0].copy("values", bytearray(struct.pack("<ii", 7, 8)), offset=8)
        values[0][2:4] = array.array("i", [7, 8])
        # None skips a DPU: the last DPU's MRAM keeps what dpu_load put there (zeros)
        mram = [bytearray(struct.pack("<64Q", *[d + 1] * 64)) for d in range(n)]
        mram[-1] = None
        dpus.copy("mram_values", mram)

        streams = [io.StringIO() for _ in range(n)]
        dpus.exec(log=streams)
        for d, stream in enumerate(streams):
            check(stream.getvalue().startswith("=== DPU#0x") and "factor -3 count 5 tasklets 1" in stream.getvalue(),
                  f"log of DPU {d}: {stream.getvalue()!r}")

        got = dpus.values.int32()
        got = got if n > 1 else [got]
        for d in range(n):
            expected = [values[d][i] * -3 + i for i in range(5)] + list(values[d][5:])
            check(list(got[d]) == expected, f"DPU {d}: values {list(got[d])[:6]}, expected {expected[:6]}")
        sums = dpus.mram_sum.uint64()
        sums = sums if n > 1 else [sums]
        for d in range(n):
            expected = 0 if d == n - 1 else (((d + 1) * -3) % (1 << 64)) * 5 % (1 << 64)
            check(sums[d] == expected, f"DPU {d}: MRAM sum {sums[d]}, expected {expected}")

        program = dpus.load(c_source=source)  # reload: fresh memory
        symbol = program.get_symbol("values")
        check(isinstance(symbol, DpuSymbol) and symbol.size() == 256, f"values symbol {symbol}")
        check(program.get_symbol("no_such_symbol") is None, "unknown symbol found")
        check({"factor", "count", "values", "mram_values"} <= set(program.fetch_all_symbols()), "symbol list")
        single = bytearray(256)
        dpus.dpus()[0].copy(single, symbol)
        check(bytes(single) == bytes(256), "reload did not reset WRAM")

        seen = []
        dpus.call(lambda rank, index, arg: seen.append((index, len(rank), arg)), "x")
        check(seen == [(i, len(r), "x") for i, r in enumerate(dpus.ranks())], f"call per rank: {seen}")
        seen.clear()
        dpus.call(lambda s, index, arg: seen.append((index, len(s))), None, single_call=True)
        check(seen == [(0, n)], f"single call: {seen}")

        for bad in (lambda: dpus.copy("values", bytearray(6)),              # WRAM length not a multiple of 4
                    lambda: dpus.copy("values", [bytearray(4)] * (n + 1)),  # one buffer too many
                    lambda: dpus.copy(bytearray(4), bytearray(4)),          # no DPU side
                    lambda: dpus.copy("values", bytearray(4), size=8),     # host buffer too small
                    lambda: dpus.load(asm_source=io.StringIO("nop"))):
            try:
                bad()
            except DpuError:
                continue
            check(False, "misuse did not raise DpuError")

    try:
        DpuSet(nr_dpus=1, nr_ranks=1)
    except DpuError:
        pass
    else:
        check(False, "nr_dpus and nr_ranks together accepted")
    print(f"python_api: {n} DPUs in {nr_ranks} ranks OK")


if __name__ == "__main__":
    main()
