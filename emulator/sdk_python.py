"""The UPMEM SDK's Python host API (package ``dpu``) on the emulator.

The SDK ships a Python package ``dpu`` whose ``DpuSet`` drives DPUs from
Python: allocation, ``load``, ``copy`` (broadcast, per-DPU scatter and
gather), ``exec``, ``log``, per-symbol attributes, ``call``.  This module is
the same interface over the emulator's libdpu-compatible library, so the SDK's
Python host programs run unmodified.  It is importable as ``dpu`` only when
opted in: ``PYTHONPATH=$(updlrm emu python-path) python3 host.py``.  That
folder's ``dpu`` defers to a real SDK's ``dpu`` package found later on
``sys.path``, so it never shadows the SDK (``UPDLRM_EMU_PYTHON_DPU=1`` forces
the emulator's).

The API was learnt from the SDK's public documentation and its ``dpu/driver.py``
(names, arguments, defaults); the code is the emulator's own.  Differences:
``asm_source`` and ``checkpoint``/``restore`` raise ``DpuError`` (no DPU
assembly, no IRAM/register contexts here); transfers complete before they
return (the SDK's ``async_mode`` for copies allows that); a symbol attribute
that names a method of ``DpuSet`` is reached with ``copy`` only.

Example::

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "k.c").write_text('''
    ... #include <stdint.h>
    ... #include <stdio.h>
    ... #include <defs.h>
    ... __host uint32_t value;
    ... int main(void) { value *= 3; printf("value %u\\\\n", value); return 0; }
    ... ''')
    >>> with DpuSet(nr_dpus=2, c_source=str(d / "k.c")) as dpus:
    ...     dpus.copy("value", [bytearray((5).to_bytes(4, "little")), bytearray((7).to_bytes(4, "little"))])
    ...     dpus.exec()
    ...     dpus.value.uint32()
    [15, 21]
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._dpuset import ERROR_NAMES, _ffi, _library

#: dpu_alloc's DPU_ALLOCATE_ALL (UINT_MAX in the SDK's dpu.h).
ALLOCATE_ALL = 0xFFFFFFFF

_DPU_SET_RANKS, _DPU_SET_DPU = 0, 1
_XFER_TO_DPU, _XFER_FROM_DPU = 0, 1
_DPU_ASYNCHRONOUS, _DPU_SYNCHRONOUS = 0, 1
_LOG_CAPACITY = 64 << 10


def python_path() -> Path:
    """The folder to put on PYTHONPATH so that ``import dpu`` gives this API.

    Example::

        >>> (python_path() / "dpu" / "__init__.py").is_file()
        True
    """
    return Path(__file__).resolve().parent / "pythonpath"


class DpuError(Exception):
    """Error raised by the API (the SDK's text of the ``dpu_error_t``, then the emulator's detail).

    Example::

        >>> str(DpuError("invalid mram access"))
        'invalid mram access'
    """


def _check(status: int) -> None:
    if status == 0:
        return
    lib = _library()
    text = lib.dpu_error_to_string(status)
    message = _ffi.string(text).decode()
    detail = _ffi.string(lib.updlrm_emu_last_error()).decode(errors="replace")
    name = ERROR_NAMES[status] if 0 <= status < len(ERROR_NAMES) else str(status)
    raise DpuError(f"{message} ({name}: {detail})" if detail else message)


def _host_view(buffer, writable: bool) -> memoryview:
    try:
        view = memoryview(buffer)
    except TypeError:
        raise DpuError(f"host buffer of type {type(buffer).__name__} does not support the buffer protocol") from None
    if writable and view.readonly:
        raise DpuError("host buffer is read-only: use a bytearray to receive data")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class DpuSymbol:
    """A symbol of a DPU program: ``value()`` is its address, ``size()`` its size in bytes.

    Example::

        >>> s = DpuSymbol("v", (0x8000000, 64))
        >>> (s.name, hex(s.value()), s.size())
        ('v', '0x8000000', 64)
    """

    def __init__(self, name: str, c_symbol):
        self.name = name
        if isinstance(c_symbol, tuple):
            self.c_symbol = _ffi.new("struct dpu_symbol_t *", {"address": c_symbol[0], "size": c_symbol[1]})[0]
        else:
            self.c_symbol = c_symbol

    def value(self) -> int:
        return int(self.c_symbol.address)

    def size(self) -> int:
        return int(self.c_symbol.size)

    def __repr__(self) -> str:
        return f"DpuSymbol({self.name!r}, address=0x{self.value():x}, size={self.size()})"


class DpuProgram:
    """A loaded DPU program; ``get_symbol(name)`` or ``None``, ``fetch_all_symbols()``.

    Example::

        >>> from updlrm.emulator._dpuset import _example_program
        >>> with DpuSet(nr_dpus=1, binary=str(_example_program())) as dpus:
        ...     program = dpus.load(str(_example_program()))
        ...     program.get_symbol("v").size(), program.get_symbol("nope")
        (8, None)
    """

    def __init__(self, c_program):
        self.c_program = c_program
        self.symbols: dict[str, DpuSymbol] = {}

    def get_symbol(self, symbol: str) -> DpuSymbol | None:
        if symbol not in self.symbols:
            c_symbol = _ffi.new("struct dpu_symbol_t *")
            if _library().dpu_get_symbol(self.c_program, symbol.encode(), c_symbol) != 0:
                return None
            self.symbols[symbol] = DpuSymbol(symbol, c_symbol[0])
        return self.symbols[symbol]

    def fetch_all_symbols(self) -> dict[str, DpuSymbol]:
        name = _ffi.new("const char **")
        index = 0
        while _library().updlrm_emu_program_symbol(self.c_program, index, name) == 0:
            self.get_symbol(_ffi.string(name[0]).decode())
            index += 1
        return self.symbols


class DpuVariable:
    """Contents of a symbol read from every DPU of a set, one view per DPU
    (a single DPU's value unwrapped): ``data()``, ``uint8()`` ... ``double()``.

    Example::

        >>> v = DpuVariable([memoryview(bytearray((7).to_bytes(4, "little") + (9).to_bytes(4, "little")))])
        >>> v.uint32(), v.uint16()
        ([7, 9], [7, 0, 9, 0])
    """

    def __init__(self, contents: list[memoryview]):
        self.contents = contents

    def data(self):
        return _unwrap(self.contents)

    def _cast(self, fmt: str):
        return _unwrap([_unwrap(view.cast(fmt).tolist()) for view in self.contents])

    def int8(self):
        return self._cast("b")

    def uint8(self):
        return self._cast("B")

    def int16(self):
        return self._cast("h")

    def uint16(self):
        return self._cast("H")

    def int32(self):
        return self._cast("i")

    def uint32(self):
        return self._cast("I")

    def int64(self):
        return self._cast("q")

    def uint64(self):
        return self._cast("Q")

    def float(self):
        return self._cast("f")

    def double(self):
        return self._cast("d")


def _unwrap(seq):
    return seq if len(seq) != 1 else seq[0]


class DpuContext:
    """Saved DPU context of the SDK (``DpuSet.checkpoint``): not available on the emulator.

    Example::

        >>> try:
        ...     DpuContext.from_buffer(memoryview(b""))
        ... except DpuError as e:
        ...     print("checkpoint" in str(e))
        True
    """

    def __init__(self, *args, **kwargs):
        raise DpuError("DPU contexts (checkpoint/restore) do not exist on the updlrm emulator: no IRAM or registers")

    @staticmethod
    def from_buffer(buf) -> DpuContext:
        return DpuContext()


class DpuSet:
    """A set of DPUs, as the SDK's ``dpu.DpuSet``.

    ``DpuSet(nr_dpus=None, nr_ranks=None, profile='', binary=None, c_source=None,
    asm_source=None, log=None, async_mode=False)``: allocates ``nr_dpus`` DPUs
    (or ``nr_ranks`` ranks; neither: ``ALLOCATE_ALL``), then loads ``binary``
    (a path or the program's bytes) or builds and loads ``c_source`` (paths or
    file objects, built for the emulator with -O2).  ``log`` (a file object, or
    one per DPU) receives the DPU output after every synchronous ``exec``.
    Iterating gives one ``DpuSet`` per DPU; ``ranks()`` one per rank; after
    ``load`` every ``__host``/``__mram`` symbol is an attribute: reading it
    gives a ``DpuVariable``, assigning copies to every DPU of the set.

    Example::

        >>> from updlrm.emulator._dpuset import _example_program
        >>> with DpuSet(nr_dpus=3, binary=str(_example_program())) as dpus:
        ...     dpus.v = bytearray((41).to_bytes(4, "little") + bytes(4))
        ...     dpus.exec()
        ...     len(dpus), len(dpus.ranks()), dpus.dpus()[2].v.uint32()
        (3, 1, [41, 42])
    """

    def __init__(
        self,
        nr_dpus: int | None = None,
        nr_ranks: int | None = None,
        profile: str = "",
        binary: bytes | str | None = None,
        c_source=None,
        asm_source=None,
        log=None,
        async_mode: bool | None = False,
        _parent: DpuSet | None = None,
        _c_set=None,
    ):
        object.__setattr__(self, "_symbols", {})
        self._async_mode = bool(async_mode)
        self._log = None if isinstance(log, list) else log
        self._dpus: list[DpuSet] = []
        self._ranks: list[DpuSet] = []
        self._top = _parent._top if _parent is not None else self
        self._freed = False
        self._program: DpuProgram | None = None
        if _parent is not None:
            self.c_set = _c_set
            return
        if nr_dpus is not None and nr_ranks is not None:
            raise DpuError("cannot specify nr_dpus and nr_ranks")
        if nr_dpus is None and nr_ranks is None:
            nr_dpus = ALLOCATE_ALL
        lib = _library()
        c_set = _ffi.new("struct dpu_set_t *")
        encoded = profile.encode() if profile else _ffi.NULL
        if nr_dpus is not None:
            _check(lib.dpu_alloc(int(nr_dpus), encoded, c_set))
        else:
            _check(lib.dpu_alloc_ranks(int(nr_ranks), encoded, c_set))
        self.c_set = c_set[0]
        try:
            self._build_subsets(log)
            if c_source is not None or asm_source is not None or binary is not None:
                self.load(binary, c_source, asm_source)
        except BaseException:
            self.free()
            raise

    # -- structure --------------------------------------------------------
    def _build_subsets(self, log) -> None:
        lib = _library()
        count = _ffi.new("uint32_t *")
        _check(lib.dpu_get_nr_ranks(self.c_set, count))
        nr_ranks = int(count[0])
        _check(lib.dpu_get_nr_dpus(self.c_set, count))
        nr_dpus = int(count[0])
        if isinstance(log, list) and len(log) != nr_dpus:
            raise DpuError("log list length does not match number of DPUs in DpuSet")
        index = 0
        for r in range(nr_ranks):
            # a one-rank set: the same rank-pointer array, one entry further per rank
            rank_c = _ffi.new(
                "struct dpu_set_t *", {"kind": _DPU_SET_RANKS, "word1": 1, "word2": self.c_set.word2 + 8 * r}
            )[0]
            rank = DpuSet(log=self._log, async_mode=self._async_mode, _parent=self, _c_set=rank_c)
            _check(lib.dpu_get_nr_dpus(rank_c, count))
            for _ in range(int(count[0])):
                dpu_c = _ffi.new("struct dpu_set_t *")
                _check(lib.updlrm_emu_dpu_at(self.c_set, index, dpu_c))
                dpu = DpuSet(
                    log=log[index] if isinstance(log, list) else self._log,
                    async_mode=self._async_mode,
                    _parent=self,
                    _c_set=dpu_c[0],
                )
                dpu._dpus.append(dpu)
                dpu._ranks.append(rank)
                rank._dpus.append(dpu)
                self._dpus.append(dpu)
                index += 1
            rank._ranks.append(rank)
            self._ranks.append(rank)

    def __enter__(self) -> DpuSet:
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.free()

    def __iter__(self) -> Iterator[DpuSet]:
        return iter(self.dpus())

    def __len__(self) -> int:
        return len(self._dpus)

    def __repr__(self) -> str:
        state = "freed" if self._top._freed else f"{len(self._dpus)} DPUs in {len(self._ranks)} ranks"
        return f"DpuSet({state}, updlrm emulator)"

    def dpus(self) -> list[DpuSet]:
        """One DpuSet per DPU of the set."""
        return self._dpus

    def ranks(self) -> list[DpuSet]:
        """One DpuSet per rank of the set."""
        return self._ranks

    def free(self) -> None:
        """Release the DPUs (``dpu_free``); only the allocated set itself can be freed."""
        if self._top is not self:
            raise DpuError("invalid action for this dpu set: only the allocated DpuSet can be freed")
        if not self._freed:
            self._freed = True
            _check(_library().dpu_free(self.c_set))

    def _alive(self):
        if self._top._freed:
            raise DpuError("invalid action for this dpu set: the DpuSet was freed")
        return self.c_set

    # -- symbols as attributes --------------------------------------------
    def __getattr__(self, name: str):
        symbols = object.__getattribute__(self, "_symbols")
        if name in symbols:
            return self._read_symbol(symbols[name])
        raise AttributeError(f"'DpuSet' object has no attribute {name!r} (and the loaded program no such symbol)")

    def __setattr__(self, name: str, value) -> None:
        symbols = object.__getattribute__(self, "_symbols")
        if name in symbols and not name.startswith("_"):
            self.copy(symbols[name], value)
        else:
            object.__setattr__(self, name, value)

    def _read_symbol(self, symbol: DpuSymbol) -> DpuVariable:
        size = symbol.size()
        buffers = [bytearray(size) for _ in self._dpus]
        self.copy(buffers, symbol)
        return DpuVariable([memoryview(b) for b in buffers])

    def _set_symbols(self, symbols: dict[str, DpuSymbol]) -> None:
        for member in [self._top, *self._top._ranks, *self._top._dpus]:
            object.__setattr__(member, "_symbols", symbols)

    # -- programs ---------------------------------------------------------
    def load(self, binary=None, c_source=None, asm_source=None) -> DpuProgram:
        """Load a DPU program (path or bytes of an emulator DPU binary), or
        build ``c_source`` (path(s) or file object(s)) for the emulator and load it."""
        if (binary is None) == (c_source is None and asm_source is None):
            raise DpuError("one and only one source or binary program must be defined")
        if asm_source is not None:
            raise DpuError("DPU assembly cannot run on the updlrm emulator; load C sources or a binary built for it")
        lib = _library()
        c_program = _ffi.new("struct dpu_program_t **")
        with tempfile.TemporaryDirectory(prefix="updlrm-dpu-py-") as tmp:
            if c_source is not None:
                from ._compiler import CompileError, compile_dpu_program

                sources = []
                for i, source in enumerate(c_source if isinstance(c_source, list) else [c_source]):
                    if not isinstance(source, (str, os.PathLike)):
                        path = Path(tmp) / f"src{i}.c"
                        path.write_text(source.read())
                        source = path
                    sources.append(Path(source))
                try:
                    built = compile_dpu_program(sources, Path(tmp) / "main.dpu", opt="-O2")
                except CompileError as error:
                    raise DpuError(str(error)) from None
                # the library keeps its own copy: workers start after this directory is gone
                binary = built.read_bytes()
            if isinstance(binary, (str, os.PathLike)):
                _check(lib.dpu_load(self._alive(), os.fsencode(os.fspath(binary)), c_program))
            else:
                data = bytearray(binary)
                _check(lib.dpu_load_from_memory(self._alive(), _ffi.from_buffer(data), len(data), c_program))
        program = DpuProgram(c_program[0])
        self._program = program
        self._set_symbols(program.fetch_all_symbols())
        return program

    # -- transfers --------------------------------------------------------
    def copy(self, dst, src, size: int | None = None, offset: int = 0, async_mode: bool | None = None) -> None:
        """Copy between host buffers and a DPU symbol (a name or a DpuSymbol).

        To the DPUs: one buffer is broadcast to every DPU of the set, a list
        gives one buffer per DPU (``None`` skips a DPU).  From the DPUs: a list
        of one writable buffer per DPU (or one buffer for a one-DPU set).
        ``size`` defaults to the buffers' length (equal for all).
        """
        to_dpu = isinstance(dst, (str, DpuSymbol))
        from_dpu = isinstance(src, (str, DpuSymbol))
        if to_dpu == from_dpu:
            raise DpuError("can only execute Host <-> DPU transfers")
        host, device = (src, dst) if to_dpu else (dst, src)
        lib = _library()
        c_set = self._alive()
        multiple = isinstance(host, list)
        if multiple and len(host) == 1 and len(self._dpus) == 1:
            multiple, host = False, host[0]
        if multiple:
            if len(host) != len(self._dpus):
                raise DpuError("invalid number of host buffers for this DPU set")
            views = [None if b is None else _host_view(b, writable=not to_dpu) for b in host]
            lengths = {v.nbytes for v in views if v is not None}
            if len(lengths) > 1:
                raise DpuError("host buffers must all have the same size")
            buffer_size = lengths.pop() if lengths else 0
        else:
            views = [_host_view(host, writable=not to_dpu)]
            buffer_size = views[0].nbytes
        if size is None:
            size = buffer_size
        elif buffer_size < size:
            raise DpuError("host buffer is too small")
        name = device.encode() if isinstance(device, str) else None
        symbol = device.c_symbol if isinstance(device, DpuSymbol) else None
        keep = [None if v is None else _ffi.from_buffer(v) for v in views]
        if to_dpu and not multiple:
            if name is not None:
                _check(lib.dpu_broadcast_to(c_set, name, offset, keep[0], size, 0))
            else:
                _check(lib.dpu_broadcast_to_symbol(c_set, symbol, offset, keep[0], size, 0))
            return
        if multiple:
            for dpu, pointer in zip(self._dpus, keep):
                _check(lib.dpu_prepare_xfer(dpu.c_set, _ffi.NULL if pointer is None else pointer))
        else:
            _check(lib.dpu_prepare_xfer(c_set, keep[0]))
        direction = _XFER_TO_DPU if to_dpu else _XFER_FROM_DPU
        if name is not None:
            _check(lib.dpu_push_xfer(c_set, direction, name, offset, size, 0))
        else:
            _check(lib.dpu_push_xfer_symbol(c_set, direction, symbol, offset, size, 0))

    # -- execution --------------------------------------------------------
    def exec(self, log=None, async_mode: bool | None = None) -> None:
        """Run the loaded program on every DPU of the set; synchronous runs then
        write the DPU logs to ``log`` (or the constructor's)."""
        asynchronous = self._async_mode if async_mode is None else async_mode
        lib = _library()
        if asynchronous:
            _check(lib.dpu_launch(self._alive(), _DPU_ASYNCHRONOUS))
            return
        _check(lib.dpu_launch(self._alive(), _DPU_SYNCHRONOUS))
        self._write_logs(log, None)

    def sync(self) -> None:
        """Wait for the asynchronous operations of the set (``dpu_sync``)."""
        _check(_library().dpu_sync(self._alive()))

    def log(self, stream=None) -> None:
        """Write every DPU's log, each after the SDK's ``=== DPU#0x<id> ===`` header,
        to ``stream`` (default: the constructor's log, else sys.stdout)."""
        self._write_logs(stream, sys.stdout)

    def _write_logs(self, log, default) -> None:
        streams = {dpu: dpu._log if dpu._log is not None else default for dpu in self._dpus}
        if isinstance(log, list):
            if len(log) != len(self._dpus):
                raise DpuError("cannot log, log list length does not match the number of DPUs in DpuSet")
            streams.update({dpu: s for dpu, s in zip(self._dpus, log) if s is not None})
        elif isinstance(log, dict):
            streams.update(log)
        elif log is not None:
            streams = dict.fromkeys(self._dpus, log)
        lib = _library()
        buffer = _ffi.new("char[]", _LOG_CAPACITY)
        length = _ffi.new("size_t *")
        for dpu, stream in streams.items():
            if stream is None:
                continue
            if not callable(getattr(stream, "write", None)):
                raise DpuError("stream argument is not an object with a 'write' method")
            _check(lib.updlrm_emu_log(dpu._alive(), buffer, _LOG_CAPACITY, length))
            text = bytes(_ffi.buffer(buffer, min(int(length[0]), _LOG_CAPACITY))).decode(errors="replace")
            header = f"=== DPU#0x{lib.dpu_get_id(_ffi.cast('void *', dpu.c_set.word1)):x} ===\n"
            _write_text(stream, header + text)

    def call(
        self,
        fn: Callable[[DpuSet, int, Any], None],
        arg: Any,
        async_mode: bool | None = None,
        is_blocking: bool = True,
        single_call: bool = False,
    ) -> None:
        """Call ``fn(dpu_set, index, arg)`` once per rank (``fn(self, 0, arg)`` with
        ``single_call``), after the set's running program, as ``dpu_callback``."""
        lib = _library()
        done = _ffi.new("bool *")
        fault = _ffi.new("bool *")
        _check(lib.dpu_status(self._alive(), done, fault))
        if not done[0]:
            _check(lib.dpu_sync(self._alive()))
        if single_call:
            fn(self, 0, arg)
            return
        for index, rank in enumerate(self._ranks):
            fn(rank, index, arg)

    def checkpoint(self, iram: bool = True, mram: bool = True, wram: bool = True) -> DpuContext:
        raise DpuError("checkpoint is not available on the updlrm emulator (no IRAM or register context)")

    def restore(self, context: DpuContext, iram: bool = True, mram: bool = True, wram: bool = True) -> None:
        raise DpuError("restore is not available on the updlrm emulator (no IRAM or register context)")


def _write_text(stream, text: str) -> None:
    if isinstance(stream, (io.RawIOBase, io.BufferedIOBase)) or "b" in getattr(stream, "mode", ""):
        stream.write(text.encode())
    else:
        stream.write(text)


__all__ = ["ALLOCATE_ALL", "DpuContext", "DpuError", "DpuProgram", "DpuSet", "DpuSymbol", "DpuVariable", "python_path"]
