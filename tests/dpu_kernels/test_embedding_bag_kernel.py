"""The DPU kernel alone, driven through the emulator's DpuSet with MRAM images built here.

This is a second, independent implementation of the ABI (dpu_kernels/embedding_bag_abi.h)
in numpy: it packs shards and a batch, predicts every partial sum, and checks the
kernel's output bytes, status block and DMA behaviour, including the error paths the
C host runtime never exercises (bad shard, row out of range, wrong tasklet count).
"""

from __future__ import annotations

import numpy as np
import pytest

from updlrm.abi import BATCH_FIELDS_BYTES, HEADER_BYTES, HEADER_MAGIC, MAX_TASKLETS, STATUS_BYTES, STATUS_MAGIC, pad8
from updlrm.abi import FORMAT_FP32 as FP32
from updlrm.abi import FORMAT_INT8 as INT8
from updlrm.emulator import DpuSet
from updlrm.host.engine import build
from updlrm.specs import RowFormat

HEAP = "__sys_used_mram_end"  # DPU_MRAM_HEAP_POINTER_NAME
FORMAT_OF_DTYPE = {fmt.dtype: fmt.abi_code for fmt in RowFormat}
OK, BAD_HEADER, TASKLET_COUNT, BAD_SHARD, ROW_RANGE = 0, 1, 2, 3, 4


def acc_dtype(fmt: int, weighted: bool):
    if fmt == FP32:
        return np.float32
    return np.int32 if fmt == INT8 and not weighted else np.int64


@pytest.fixture(scope="module", params=[16, 5])
def kernel(request):
    path, _ = build("emulator", request.param)
    return path, request.param


def static_image(shards):
    """Shard table then rows (padded to 8 bytes); returns bytes and each shard's rows offset."""
    table = bytearray(pad8(16 * len(shards)))
    body = bytearray()
    offsets = []
    for k, rows in enumerate(shards):
        fmt = FORMAT_OF_DTYPE[rows.dtype]
        row_bytes = pad8(rows.shape[1] * rows.itemsize)
        offset = len(table) + len(body)
        offsets.append(offset)
        padded = np.zeros((rows.shape[0], row_bytes), np.uint8)
        padded[:, : rows.shape[1] * rows.itemsize] = rows.view(np.uint8).reshape(rows.shape[0], -1)
        body += padded.tobytes()
        table[16 * k : 16 * k + 16] = np.array([offset, rows.shape[0], rows.shape[1], fmt], np.uint32).tobytes()
    return bytes(table + body)


def batch_image(batch_offset, shards, segments, nr_tasklets, weighted, *, header_tasklets=None, magic=HEADER_MAGIC):
    """Header + local rows + weights + segments, and the predicted partials in output order."""
    locals_ = np.array([r for _, rows, _ in segments for r in rows], np.uint32)
    weights = np.array([w for _, _, ws in segments for w in ws], np.uint32) if weighted else np.zeros(0, np.uint32)
    counts = [len(rows) for _, rows, _ in segments]
    total = int(locals_.size)
    index_at = HEADER_BYTES
    weights_at = index_at + pad8(4 * total)
    segments_at = weights_at + (pad8(4 * total) if weighted else 0)
    end = segments_at + 8 * len(segments)
    work = np.zeros((MAX_TASKLETS, 6), np.uint32)
    partials = []  # (segment, first lookup within segment, count)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out_bytes = 0
    for k in range(nr_tasklets):
        lo, hi = total * k // nr_tasklets, total * (k + 1) // nr_tasklets
        seg = int(np.searchsorted(starts, lo, side="right") - 1) if lo < total else len(segments)
        while seg < len(segments) and counts[seg] == 0:
            seg += 1
        skip = lo - int(starts[seg]) if seg < len(segments) else 0
        work[k] = [seg, skip, lo, hi - lo, out_bytes, 0]
        j = lo
        while j < hi:
            s = int(np.searchsorted(starts, j, side="right") - 1)
            take = min(int(starts[s + 1]), hi) - j
            partials.append((s, j - int(starts[s]), take))
            shard = shards[segments[s][0]]
            out_bytes += pad8(shard.shape[1] * np.dtype(acc_dtype(_fmt(shard), weighted)).itemsize)
            j += take
    fields = np.array(
        [
            magic,
            header_tasklets or nr_tasklets,
            len(shards),
            int(weighted),
            len(segments),
            total,
            batch_offset + segments_at,
            batch_offset + index_at,
            batch_offset + weights_at,
            batch_offset + pad8(end),
        ],
        np.uint32,
    )
    image = bytearray(pad8(end))
    image[:40] = fields.tobytes()
    image[BATCH_FIELDS_BYTES:HEADER_BYTES] = work.tobytes()
    image[index_at : index_at + 4 * total] = locals_.tobytes()
    image[weights_at : weights_at + 4 * weights.size] = weights.tobytes()
    seg_records = np.array([[s, len(rows)] for s, rows, _ in segments], np.uint32).reshape(-1, 2)
    image[segments_at:end] = seg_records.tobytes()
    return bytes(image), batch_offset + pad8(end), partials, STATUS_BYTES + out_bytes


def _fmt(rows):
    return FORMAT_OF_DTYPE[rows.dtype]


def expected_partial(shard, rows, weights, weighted):
    fmt = _fmt(shard)
    acc = acc_dtype(fmt, weighted)
    if fmt == FP32:
        result = np.zeros(shard.shape[1], np.float32)
        for r, w in zip(rows, weights):
            result += (np.uint32(w).view(np.float32) * shard[r]) if weighted else shard[r]
        return result
    values = shard[list(rows)].astype(np.int64)
    if weighted:
        values = values * np.array(weights, np.uint32).view(np.int32).astype(np.int64)[:, None]
    return values.sum(axis=0).astype(acc)


def run_kernel(kernel_path, nr_tasklets, shards, segments, weighted, *, with_counters=False, **header):
    static = static_image(shards)
    batch_offset = pad8(len(static))
    batch, output_offset, partials, out_bytes = batch_image(
        batch_offset, shards, segments, nr_tasklets, weighted, **header
    )
    with DpuSet(1) as dpus:
        dpus.load(kernel_path)
        dpus.copy_to("eb_config", np.array([1, batch_offset], np.uint32).tobytes())
        dpus.copy_to(HEAP, np.frombuffer(static, np.uint8))
        dpus.copy_to(HEAP, np.frombuffer(batch, np.uint8), offset=batch_offset)
        dpus.copy_to(HEAP, np.zeros(pad8(out_bytes), np.uint8), offset=output_offset)
        dpus.reset_counters()
        dpus.launch()
        out = dpus.copy_from(HEAP, pad8(out_bytes), offset=output_offset, dpu=0)
        counters = dpus.counters() if with_counters else None
    status = np.frombuffer(out[:STATUS_BYTES].tobytes(), np.uint32)
    return status, out[STATUS_BYTES:].tobytes(), partials, counters


def check_partials(shards, segments, weighted, body, partials):
    cursor = 0
    for s, first, count in partials:
        shard_id, rows, weights = segments[s]
        shard = shards[shard_id]
        expect = expected_partial(shard, rows[first : first + count], weights[first : first + count], weighted)
        nbytes = pad8(expect.nbytes)
        got = np.frombuffer(body[cursor : cursor + expect.nbytes], expect.dtype)
        cursor += nbytes
        if expect.dtype == np.float32:
            np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)
        else:
            assert np.array_equal(got, expect)


def random_case(rng, weighted, nr_segments=30, max_lookups=40):
    shards = [
        rng.standard_normal((50, 7)).astype(np.float32),
        rng.integers(-1000, 1000, (20, 600)).astype(np.int32),  # 2,400-byte rows: several chunks
        rng.integers(-128, 128, (33, 13)).astype(np.int8),
        rng.standard_normal((5, 1)).astype(np.float32),
    ]
    segments = []
    for _ in range(nr_segments):
        s = int(rng.integers(0, len(shards)))
        n = int(rng.integers(1, max_lookups))
        rows = rng.integers(0, shards[s].shape[0], n).tolist()
        if _fmt(shards[s]) == FP32:
            ws = rng.uniform(-2, 2, n).astype(np.float32).view(np.uint32).tolist()
        else:
            ws = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int32).view(np.uint32).tolist()
        segments.append((s, rows, ws))
    return shards, segments


@pytest.mark.parametrize("weighted", [False, True])
def test_kernel_matches_numpy_model(kernel, weighted):
    path, nr_tasklets = kernel
    rng = np.random.default_rng([nr_tasklets, weighted])
    shards, segments = random_case(rng, weighted)
    status, body, partials, counters = run_kernel(path, nr_tasklets, shards, segments, weighted, with_counters=True)
    assert status[0] == STATUS_MAGIC and status[1] == OK and status[3] == nr_tasklets
    check_partials(shards, segments, weighted, body, partials)
    # Work is balanced by lookups: every tasklet read rows for its share (+- one lookup).
    lookups = sum(len(r) for _, r, _ in segments)
    reads = counters["mram_read_count"][0, :nr_tasklets]
    assert reads.min() > 0 and reads.sum() >= lookups


def test_single_long_bag_is_shared_by_all_tasklets(kernel):
    path, nr_tasklets = kernel
    rng = np.random.default_rng(11)
    shard = rng.standard_normal((64, 16)).astype(np.float32)
    rows = rng.integers(0, 64, 997).tolist()
    segments = [(0, rows, [0] * len(rows))]
    status, body, partials, counters = run_kernel(path, nr_tasklets, [shard], segments, False, with_counters=True)
    assert status[1] == OK and len(partials) == nr_tasklets
    check_partials([shard], segments, False, body, partials)
    row_reads = counters["mram_read_bytes"][0, :nr_tasklets]
    share = 997 // nr_tasklets * 64
    assert row_reads.min() >= share  # each tasklet gathered about 1/T of the rows


def test_row_outside_its_shard_is_reported(kernel):
    path, nr_tasklets = kernel
    shard = np.ones((4, 2), np.float32)
    status, *_ = run_kernel(path, nr_tasklets, [shard], [(0, [1, 4, 2], [0, 0, 0])], False)
    assert status[0] == STATUS_MAGIC and status[1] == ROW_RANGE and status[2] == 4


def test_unknown_shard_is_reported(kernel):
    path, nr_tasklets = kernel
    shard = np.ones((4, 2), np.float32)
    static_shards = [shard]
    segments = [(0, [1], [0])]
    # Claim a shard index the DPU does not hold by rewriting the segment record after packing.
    static = static_image(static_shards)
    batch_offset = pad8(len(static))
    batch, output_offset, _, _out_bytes = batch_image(batch_offset, static_shards, segments, nr_tasklets, False)
    batch = bytearray(batch)
    segments_at = int(np.frombuffer(batch[24:28], np.uint32)[0]) - batch_offset
    batch[segments_at : segments_at + 4] = np.array([7], np.uint32).tobytes()
    with DpuSet(1) as dpus:
        dpus.load(path)
        dpus.copy_to("eb_config", np.array([1, batch_offset], np.uint32).tobytes())
        dpus.copy_to(HEAP, np.frombuffer(static, np.uint8))
        dpus.copy_to(HEAP, np.frombuffer(bytes(batch), np.uint8), offset=batch_offset)
        dpus.launch()
        status = np.frombuffer(dpus.copy_from(HEAP, STATUS_BYTES, offset=output_offset, dpu=0).tobytes(), np.uint32)
    assert status[1] == BAD_SHARD and status[2] == 7


def test_wrong_tasklet_count_is_reported(kernel):
    path, nr_tasklets = kernel
    shard = np.ones((4, 2), np.float32)
    status, *_ = run_kernel(path, nr_tasklets, [shard], [(0, [1], [0])], False, header_tasklets=nr_tasklets + 1)
    assert status[1] == TASKLET_COUNT and status[2] == nr_tasklets + 1


def test_missing_header_writes_no_status(kernel):
    path, nr_tasklets = kernel
    shard = np.ones((4, 2), np.float32)
    status, *_ = run_kernel(path, nr_tasklets, [shard], [(0, [1], [0])], False, magic=0)
    assert status[0] == 0  # the host sees no status magic and fails the batch
