"""Python access to the emulator's libdpu (cffi, ABI mode; calls release the GIL).

Example::

    >>> import tempfile, pathlib, numpy as np
    >>> from updlrm.emulator import compile_dpu_program, DpuSet
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "k.c").write_text('''
    ... #include <stdint.h>
    ... #include <defs.h>
    ... __host uint32_t value;
    ... int main(void) { if (me() == 0) value *= 2; return 0; }
    ... ''')
    >>> program = compile_dpu_program(d / "k.c", d / "k")
    >>> with DpuSet(4) as dpus:
    ...     dpus.load(program)
    ...     dpus.push_to("value", [np.array([i], np.uint32) for i in range(4)])
    ...     dpus.launch()
    ...     dpus.copy_from("value", 4).view(np.uint32).ravel().tolist()
    [0, 2, 4, 6]
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from cffi import FFI

from . import _build
from ._compiler import compile_dpu_program

# dpu_error_t of the UPMEM SDK 2025.1 (include/dpu/dpu_error.h), in order.
ERROR_NAMES = [
    "DPU_OK",
    "DPU_ERR_INTERNAL",
    "DPU_ERR_SYSTEM",
    "DPU_ERR_DRIVER",
    "DPU_ERR_ALLOCATION",
    "DPU_ERR_INVALID_DPU_SET",
    "DPU_ERR_INVALID_THREAD_ID",
    "DPU_ERR_INVALID_NOTIFY_ID",
    "DPU_ERR_INVALID_WRAM_ACCESS",
    "DPU_ERR_INVALID_IRAM_ACCESS",
    "DPU_ERR_INVALID_MRAM_ACCESS",
    "DPU_ERR_INVALID_SYMBOL_ACCESS",
    "DPU_ERR_MRAM_BUSY",
    "DPU_ERR_TRANSFER_ALREADY_SET",
    "DPU_ERR_INVALID_PARALLEL_MEMORY_TRANSFER",
    "DPU_ERR_WRAM_FIFO_FULL",
    "DPU_ERR_NO_PROGRAM_LOADED",
    "DPU_ERR_DIFFERENT_DPU_PROGRAMS",
    "DPU_ERR_CORRUPTED_MEMORY",
    "DPU_ERR_DPU_DISABLED",
    "DPU_ERR_DPU_ALREADY_RUNNING",
    "DPU_ERR_INVALID_MEMORY_TRANSFER",
    "DPU_ERR_INVALID_LAUNCH_POLICY",
    "DPU_ERR_DPU_FAULT",
    "DPU_ERR_ELF_INVALID_FILE",
    "DPU_ERR_ELF_NO_SUCH_FILE",
    "DPU_ERR_ELF_NO_SUCH_SECTION",
    "DPU_ERR_TIMEOUT",
    "DPU_ERR_INVALID_PROFILE",
    "DPU_ERR_UNKNOWN_SYMBOL",
    "DPU_ERR_LOG_FORMAT",
    "DPU_ERR_LOG_CONTEXT_MISSING",
    "DPU_ERR_LOG_BUFFER_TOO_SMALL",
    "DPU_ERR_VPD_INVALID_FILE",
    "DPU_ERR_VPD_NO_REPAIR",
    "DPU_ERR_NO_THREAD_PER_RANK",
    "DPU_ERR_INVALID_BUFFER_SIZE",
    "DPU_ERR_NONBLOCKING_SYNC_CALLBACK",
    "DPU_ERR_TOO_MANY_TASKLETS",
    "DPU_ERR_SG_TOO_MANY_BLOCKS",
    "DPU_ERR_SG_LENGTH_MISMATCH",
    "DPU_ERR_SG_NOT_ACTIVATED",
    "DPU_ERR_SG_NOT_MRAM_SYMBOL",
]

MAX_TASKLETS = 24
DPU_COUNTER_FIELDS = ("launches", "host_to_dpu_bytes", "dpu_to_host_bytes", "faults", "last_launch_cycles")
TASKLET_COUNTER_FIELDS = (
    "mram_read_count",
    "mram_read_bytes",
    "mram_write_count",
    "mram_write_bytes",
    "barrier_waits",
    "mutex_waits",
    "sem_waits",
    "handshake_waits",
    "switches",
    "runtime_calls",
    "cycles",
)

# struct dpu_set_t holds an anonymous union, which cffi's ABI mode cannot pass
# by value; the 24-byte stand-in has the same size and alignment, and structs
# over 16 bytes are passed in memory (x86-64 SysV) or by reference (AAPCS64)
# whatever their fields, so the calls are ABI-identical.
_CDEF = """
typedef int dpu_error_t;
struct dpu_program_t;
struct dpu_set_t { uint32_t kind; uint32_t padding; uint64_t word1; uint64_t word2; };
struct dpu_symbol_t { uint32_t address; uint32_t size; };
char *dpu_error_to_string(dpu_error_t status);
dpu_error_t dpu_alloc(uint32_t nr_dpus, const char *profile, struct dpu_set_t *dpu_set);
dpu_error_t dpu_alloc_ranks(uint32_t nr_ranks, const char *profile, struct dpu_set_t *dpu_set);
dpu_error_t dpu_free(struct dpu_set_t dpu_set);
dpu_error_t dpu_get_nr_ranks(struct dpu_set_t dpu_set, uint32_t *nr_ranks);
dpu_error_t dpu_get_nr_dpus(struct dpu_set_t dpu_set, uint32_t *nr_dpus);
dpu_error_t dpu_load(struct dpu_set_t dpu_set, const char *binary_path, struct dpu_program_t **program);
dpu_error_t dpu_get_symbol(struct dpu_program_t *program, const char *symbol_name, struct dpu_symbol_t *symbol);
dpu_error_t dpu_launch(struct dpu_set_t dpu_set, int policy);
dpu_error_t dpu_status(struct dpu_set_t dpu_set, bool *done, bool *fault);
dpu_error_t dpu_sync(struct dpu_set_t dpu_set);
dpu_error_t dpu_copy_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src, size_t length);
dpu_error_t dpu_copy_from(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, void *dst, size_t length);
dpu_error_t dpu_prepare_xfer(struct dpu_set_t dpu_set, void *buffer);
dpu_error_t dpu_push_xfer(struct dpu_set_t dpu_set, int xfer, const char *symbol_name, uint32_t symbol_offset, size_t length, int flags);
dpu_error_t dpu_broadcast_to(struct dpu_set_t dpu_set, const char *symbol_name, uint32_t symbol_offset, const void *src, size_t length, int flags);
const char *updlrm_emu_last_error(void);
dpu_error_t updlrm_emu_counters_array(struct dpu_set_t set, uint64_t *out, size_t capacity);
dpu_error_t updlrm_emu_reset_counters(struct dpu_set_t set);
dpu_error_t updlrm_emu_dpu_at(struct dpu_set_t set, uint32_t index, struct dpu_set_t *dpu);
dpu_error_t updlrm_emu_fault_info(struct dpu_set_t set, uint32_t *dpu_index, int32_t *tasklet, char *message, size_t message_size);
dpu_error_t updlrm_emu_nr_workers(struct dpu_set_t set, uint32_t *nr_workers);
dpu_error_t updlrm_emu_set_faults(struct dpu_set_t set, const char *rules);
dpu_error_t updlrm_emu_log(struct dpu_set_t dpu, char *buffer, size_t capacity, size_t *length);
dpu_error_t updlrm_emu_program_symbol(struct dpu_program_t *program, uint32_t index, const char **name);
dpu_error_t dpu_load_from_memory(struct dpu_set_t dpu_set, uint8_t *buffer, size_t buffer_size, struct dpu_program_t **program);
dpu_error_t dpu_broadcast_to_symbol(struct dpu_set_t dpu_set, struct dpu_symbol_t symbol, uint32_t symbol_offset, const void *src, size_t length, int flags);
dpu_error_t dpu_push_xfer_symbol(struct dpu_set_t dpu_set, int xfer, struct dpu_symbol_t symbol, uint32_t symbol_offset, size_t length, int flags);
uint32_t dpu_get_id(void *dpu);
"""

_DPU_ASYNCHRONOUS, _DPU_SYNCHRONOUS = 0, 1
_XFER_TO_DPU, _XFER_FROM_DPU = 0, 1
_LOG_CAPACITY = 64 << 10

_ffi = FFI()
_ffi.cdef(_CDEF)
_lib = None
_lib_lock = threading.Lock()


def _library():
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _ffi.dlopen(str(_build.native_dir() / _build.HOST_LIBRARY))
        return _lib


# The program the method examples below run; one definition so that they stay
# short and agree with each other.
_EXAMPLE_SOURCE = r"""#include <stdint.h>
#include <stdio.h>
__host uint32_t v[2];
int main(void) { v[1] = v[0] + 1; printf("v=%u\n", v[1]); return 0; }
"""


@functools.cache
def _example_program() -> Path:
    """Build (once per process) the two-word program the DpuSet examples use.

    It has ``__host uint32_t v[2]``; a launch sets ``v[1] = v[0] + 1`` and
    prints ``v=<v[1]>``.

    Example::

        >>> with DpuSet(1) as dpus:
        ...     dpus.load(_example_program())
        ...     dpus.copy_to("v", np.array([41], np.uint32))
        ...     dpus.launch()
        ...     dpus.log(0)
        'v=42\\n'
    """
    directory = Path(tempfile.mkdtemp(prefix="updlrm-dpuset-example-"))
    (directory / "example.c").write_text(_EXAMPLE_SOURCE)
    return compile_dpu_program(directory / "example.c", directory / "example")


class DpuError(RuntimeError):
    """An emulator/libdpu call failed.

    ``code_name`` is the SDK's ``dpu_error_t`` name (e.g. ``"DPU_ERR_DPU_FAULT"``);
    for faults, ``dpu`` is the DPU's index in the set and ``tasklet`` the
    faulting tasklet (None when not tasklet specific).

    Example::

        >>> e = DpuError("DPU_ERR_DPU_FAULT", "boom", dpu=3, tasklet=1)
        >>> (e.code_name, e.dpu, e.tasklet)
        ('DPU_ERR_DPU_FAULT', 3, 1)
    """

    def __init__(self, code_name: str, message: str, dpu: int | None = None, tasklet: int | None = None):
        self.code_name = code_name
        self.message = message
        self.dpu = dpu
        self.tasklet = tasklet
        where = ""
        if dpu is not None:
            where = f" [dpu {dpu}" + (f", tasklet {tasklet}" if tasklet is not None else "") + "]"
        super().__init__(f"{code_name}{where}: {message}")


def _as_bytes(data) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    array = np.ascontiguousarray(data)
    return array.reshape(-1).view(np.uint8)


class DpuSet:
    """A set of emulated DPUs (``dpu_alloc``), usable as a context manager.

    ``profile`` is the SDK's ``key=value,...`` string; the emulator adds
    ``nrRanks`` (machine size), ``nrWorkers`` (processes) and ``timeout``
    (seconds per launch).

    Example::

        >>> with DpuSet(70) as dpus:
        ...     (dpus.nr_dpus, dpus.nr_ranks)
        (70, 2)
    """

    def __init__(self, nr_dpus: int, profile: str = ""):
        self._lib = _library()
        self._set = _ffi.new("struct dpu_set_t *")
        self._check(self._lib.dpu_alloc(int(nr_dpus), profile.encode() if profile else _ffi.NULL, self._set))
        self._program = _ffi.new("struct dpu_program_t **")
        self._dpus = None
        self.program_path: Path | None = None
        count = _ffi.new("uint32_t *")
        self._check(self._lib.dpu_get_nr_dpus(self._set[0], count))
        self.nr_dpus = int(count[0])
        self._check(self._lib.dpu_get_nr_ranks(self._set[0], count))
        self.nr_ranks = int(count[0])

    # -- plumbing ---------------------------------------------------------
    def _check(self, status: int, faults_of=None) -> None:
        if status == 0:
            return
        name = ERROR_NAMES[status] if 0 <= status < len(ERROR_NAMES) else f"DPU_ERR_{status}"
        detail = _ffi.string(self._lib.updlrm_emu_last_error()).decode(errors="replace")
        dpu = tasklet = None
        if name in ("DPU_ERR_DPU_FAULT", "DPU_ERR_TIMEOUT") and faults_of is not None:
            index = _ffi.new("uint32_t *")
            task = _ffi.new("int32_t *")
            message = _ffi.new("char[]", 512)
            if self._lib.updlrm_emu_fault_info(faults_of, index, task, message, 512) == 0:
                dpu = int(index[0])
                tasklet = int(task[0]) if task[0] >= 0 else None
                detail = _ffi.string(message).decode(errors="replace") or detail
        raise DpuError(name, detail or _ffi.string(self._lib.dpu_error_to_string(status)).decode(), dpu, tasklet)

    def _alive(self):
        if self._set is None:
            raise DpuError("DPU_ERR_INVALID_DPU_SET", "the DPU set was freed")
        return self._set[0]

    def _dpu(self, index: int):
        if not 0 <= index < self.nr_dpus:
            raise IndexError(f"DPU index {index} out of range [0, {self.nr_dpus})")
        if self._dpus is None:
            self._dpus = _ffi.new("struct dpu_set_t[]", self.nr_dpus)
            for i in range(self.nr_dpus):
                self._check(self._lib.updlrm_emu_dpu_at(self._alive(), i, self._dpus + i))
        return self._dpus[index]

    # -- lifecycle --------------------------------------------------------
    def close(self) -> None:
        """Free the DPUs (``dpu_free``); idempotent.

        Example::

            >>> dpus = DpuSet(2)
            >>> dpus.close(); dpus.close()
        """
        if self._set is not None:
            status = self._lib.dpu_free(self._set[0])
            self._set = None
            self._check(status)

    def __enter__(self) -> DpuSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to report to
            self.close()

    # -- programs ---------------------------------------------------------
    def load(self, path: str | os.PathLike) -> None:
        """Load an emulator DPU executable on every DPU (``dpu_load``).

        Example::

            >>> with DpuSet(2) as dpus:
            ...     dpus.load(_example_program())
        """
        self._check(self._lib.dpu_load(self._alive(), os.fsencode(os.fspath(path)), self._program))
        self.program_path = Path(path)

    def symbol(self, name: str) -> tuple[int, int]:
        """(address, size) of a symbol of the loaded program (``dpu_get_symbol``).

        Example::

            >>> with DpuSet(1) as dpus:
            ...     dpus.load(_example_program())
            ...     dpus.symbol("v")[1]
            8
        """
        symbol = _ffi.new("struct dpu_symbol_t *")
        self._check(self._lib.dpu_get_symbol(self._program[0], name.encode(), symbol))
        return int(symbol.address), int(symbol.size)

    # -- transfers --------------------------------------------------------
    def copy_to(self, symbol: str, data, offset: int = 0, dpu: int | None = None) -> None:
        """Write ``data`` at ``symbol + offset`` of one DPU, or of all (broadcast).

        Example::

            >>> with DpuSet(2) as dpus:
            ...     dpus.load(_example_program())
            ...     dpus.copy_to("v", np.array([7], np.uint32))
            ...     dpus.copy_to("v", np.array([9], np.uint32), dpu=1)
            ...     dpus.copy_from("v", 4).view(np.uint32).ravel().tolist()
            [7, 9]
        """
        raw = _as_bytes(data)
        pointer = _ffi.from_buffer(raw)
        if dpu is None:
            self._check(self._lib.dpu_broadcast_to(self._alive(), symbol.encode(), offset, pointer, raw.nbytes, 0))
        else:
            self._check(self._lib.dpu_copy_to(self._dpu(dpu), symbol.encode(), offset, pointer, raw.nbytes))

    def push_to(self, symbol: str, arrays_per_dpu: Sequence, offset: int = 0) -> None:
        """Parallel transfer: ``arrays_per_dpu[i]`` to DPU i, all of one byte length.

        A 2-D array with one row per DPU works too.

        Example::

            >>> with DpuSet(3) as dpus:
            ...     dpus.load(_example_program())
            ...     dpus.push_to("v", np.array([[1], [2], [3]], np.uint32))
            ...     dpus.copy_from("v", 4).view(np.uint32).ravel().tolist()
            [1, 2, 3]
        """
        if len(arrays_per_dpu) != self.nr_dpus:
            raise ValueError(f"push_to needs {self.nr_dpus} buffers, got {len(arrays_per_dpu)}")
        buffers = [_as_bytes(a) for a in arrays_per_dpu]
        length = buffers[0].nbytes if buffers else 0
        if any(b.nbytes != length for b in buffers):
            raise ValueError("push_to: every DPU's buffer must have the same byte length")
        keep = [_ffi.from_buffer(b) for b in buffers]
        for i, pointer in enumerate(keep):
            self._check(self._lib.dpu_prepare_xfer(self._dpu(i), pointer))
        self._check(self._lib.dpu_push_xfer(self._alive(), _XFER_TO_DPU, symbol.encode(), offset, length, 0))

    def copy_from(self, symbol: str, nbytes: int, offset: int = 0, dpu: int | None = None) -> np.ndarray:
        """Read ``nbytes`` at ``symbol + offset``: shape (nr_dpus, nbytes), or (nbytes,) for one DPU.

        Example::

            >>> with DpuSet(2) as dpus:
            ...     dpus.load(_example_program())
            ...     (dpus.copy_from("v", 8).shape, dpus.copy_from("v", 4, offset=4, dpu=1).shape)
            ((2, 8), (4,))
        """
        if dpu is not None:
            out = np.empty(nbytes, dtype=np.uint8)
            self._check(self._lib.dpu_copy_from(self._dpu(dpu), symbol.encode(), offset, _ffi.from_buffer(out), nbytes))
            return out
        out = np.empty((self.nr_dpus, nbytes), dtype=np.uint8)
        base = _ffi.from_buffer(out)
        for i in range(self.nr_dpus):
            self._check(self._lib.dpu_prepare_xfer(self._dpu(i), base + i * nbytes))
        self._check(self._lib.dpu_push_xfer(self._alive(), _XFER_FROM_DPU, symbol.encode(), offset, nbytes, 0))
        return out

    # -- execution --------------------------------------------------------
    def launch(self, asynchronous: bool = False) -> None:
        """Run the loaded program on every DPU (``dpu_launch``).

        Example::

            >>> with DpuSet(2) as dpus:
            ...     dpus.load(_example_program())
            ...     dpus.launch()
            ...     dpus.copy_from("v", 8, dpu=0).view(np.uint32).tolist()
            [0, 1]
        """
        policy = _DPU_ASYNCHRONOUS if asynchronous else _DPU_SYNCHRONOUS
        self._check(self._lib.dpu_launch(self._alive(), policy), faults_of=self._alive())

    def sync(self) -> None:
        """Wait for an asynchronous launch; raises DpuError if a DPU faulted.

        Example::

            >>> with DpuSet(2) as dpus:
            ...     dpus.load(_example_program())
            ...     dpus.launch(asynchronous=True)
            ...     dpus.sync()
            ...     dpus.status()
            (True, False)
        """
        self._check(self._lib.dpu_sync(self._alive()), faults_of=self._alive())

    def status(self) -> tuple[bool, bool]:
        """(done, fault) of the set (``dpu_status``).

        Example::

            >>> with DpuSet(1) as dpus:
            ...     dpus.status()
            (True, False)
        """
        done = _ffi.new("bool *")
        fault = _ffi.new("bool *")
        self._check(self._lib.dpu_status(self._alive(), done, fault))
        return bool(done[0]), bool(fault[0])

    def log(self, dpu: int) -> str:
        """What the DPU printed during its last launch (``dpu_log_read``).

        Example::

            >>> with DpuSet(1) as dpus:
            ...     dpus.load(_example_program())
            ...     dpus.launch()
            ...     dpus.log(0)
            'v=1\\n'
        """
        buffer = _ffi.new("char[]", _LOG_CAPACITY)
        length = _ffi.new("size_t *")
        self._check(self._lib.updlrm_emu_log(self._dpu(dpu), buffer, _LOG_CAPACITY, length))
        return bytes(_ffi.buffer(buffer, int(length[0]))).decode(errors="replace")

    @property
    def nr_workers(self) -> int:
        """Worker processes currently serving this set (0 before the first launch).

        Example::

            >>> with DpuSet(1) as dpus:
            ...     dpus.nr_workers
            0
        """
        count = _ffi.new("uint32_t *")
        self._check(self._lib.updlrm_emu_nr_workers(self._alive(), count))
        return int(count[0])

    def inject_faults(self, rules: str | None) -> None:
        """Test hook: arm the emulator's fault injection rules (``updlrm_emu_set_faults``).

        ``rules`` has the grammar of ``UPDLRM_EMU_FAULTS`` (emulator/README.md, "Fault
        injection"), e.g. ``"fault:dpu=1,dma=3,launch=1"``; None or "" disarms.
        Launch numbers count from this call.

        Example::

            >>> with DpuSet(2) as dpus:
            ...     dpus.load(_example_program())
            ...     dpus.inject_faults("fault:dpu=1,launch=1")
            ...     try:
            ...         dpus.launch()
            ...     except DpuError as e:
            ...         print(e.code_name, e.dpu, e.tasklet)
            ...     dpus.launch()                     # launch 2: no rule, runs normally
            DPU_ERR_DPU_FAULT 1 0
        """
        self._check(self._lib.updlrm_emu_set_faults(self._alive(), rules.encode() if rules else _ffi.NULL))

    # -- counters ---------------------------------------------------------
    def counters(self) -> dict[str, np.ndarray]:
        """Emulator counters: per-DPU fields shape (nr_dpus,), per-tasklet (nr_dpus, 24).

        Example::

            >>> with DpuSet(3) as dpus:
            ...     c = dpus.counters()
            ...     (c["launches"].shape, c["mram_read_bytes"].shape)
            ((3,), (3, 24))
        """
        row = len(DPU_COUNTER_FIELDS) + MAX_TASKLETS * len(TASKLET_COUNTER_FIELDS)
        raw = np.empty((self.nr_dpus, row), dtype=np.uint64)
        self._check(self._lib.updlrm_emu_counters_array(self._alive(), _ffi.from_buffer("uint64_t[]", raw), raw.size))
        out = {name: raw[:, i].copy() for i, name in enumerate(DPU_COUNTER_FIELDS)}
        tasklets = raw[:, len(DPU_COUNTER_FIELDS) :].reshape(self.nr_dpus, MAX_TASKLETS, len(TASKLET_COUNTER_FIELDS))
        for i, name in enumerate(TASKLET_COUNTER_FIELDS):
            out[name] = tasklets[:, :, i].copy()
        return out

    def reset_counters(self) -> None:
        """Zero every counter of the set.

        Example::

            >>> with DpuSet(1) as dpus:
            ...     dpus.reset_counters()
            ...     int(dpus.counters()["launches"][0])
            0
        """
        self._check(self._lib.updlrm_emu_reset_counters(self._alive()))
