"""Minimal ELF64 reader for emulator DPU executables (sections, symbols, config).

Only what the emulator needs: section headers by name, ``.symtab`` entries
and the ``.updlrm_config`` record the compiler driver writes.  The host
library (C) does the same parsing at ``dpu_load``; this one serves the
compiler driver's capacity check and Python introspection.

Example::

    >>> import sys
    >>> elf = ElfFile.from_path(sys.executable)
    >>> elf.machine in ("x86_64", "aarch64")
    True
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

_MACHINES = {62: "x86_64", 183: "aarch64"}
CONFIG_SECTION = ".updlrm_config"
CONFIG_MAGIC = 0x55444C52
MAX_TASKLETS = 24


#: e_machine of the UPMEM SDK's DPU binaries (32-bit little-endian ELF from dpu-upmem-dpurte-clang).
EM_DPU = 245


class ElfError(ValueError):
    """The file is not an ELF64 file this reader understands."""


def sdk_dpu_binary_message(path) -> str:
    """What to do with a DPU binary built by the real SDK compiler (the host
    library's dpu_load says the same).

    Example::

        >>> "updlrm emu build" in sdk_dpu_binary_message("task.dpu")
        True
    """
    return (
        f"'{path}' is a DPU binary built by the UPMEM SDK's compiler (32-bit ELF, machine EM_DPU): it runs on "
        "real DPUs or the SDK's simulator, not on the emulator. Build the DPU sources for the emulator instead: "
        "`updlrm emu build --dpu <sources>`, updlrm.emulator.compile_dpu_program, or the SDK's Makefile with "
        "`updlrm emu shims` on PATH"
    )


def is_sdk_dpu_binary(data: bytes) -> bool:
    """Whether ``data`` starts like an ELF file of the SDK's DPU compiler.

    Example::

        >>> is_sdk_dpu_binary(b"\\x7fELF\\x01\\x01" + bytes(10) + (2).to_bytes(2, "little") + (245).to_bytes(2, "little"))
        True
    """
    return (
        len(data) >= 20 and data[:4] == b"\x7fELF" and data[4] == 1 and struct.unpack_from("<H", data, 18)[0] == EM_DPU
    )


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    address: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    type: int
    bind: int
    section_index: int


class ElfFile:
    """Parsed view of an ELF64 little-endian file.

    Example::

        >>> import sys
        >>> ElfFile.from_path(sys.executable).section(".text") is not None
        True
    """

    def __init__(self, data: bytes):
        if len(data) < 64 or data[:4] != b"\x7fELF":
            raise ElfError("not an ELF file")
        if is_sdk_dpu_binary(data):
            raise ElfError(sdk_dpu_binary_message("this file"))
        if data[4] != 2 or data[5] != 1:
            raise ElfError("only 64-bit little-endian ELF files are supported")
        self.data = data
        (self.type, machine, _, self.entry, _, shoff, _, _, _, _, shentsize, shnum, shstrndx) = struct.unpack_from(
            "<HHIQQQIHHHHHH", data, 16
        )
        self.machine = _MACHINES.get(machine, str(machine))
        if shoff == 0 or shentsize != 64 or shoff + shnum * 64 > len(data) or shstrndx >= shnum:
            raise ElfError("missing or corrupt section headers")
        raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64) for i in range(shnum)]
        names = raw[shstrndx]
        self.sections: list[Section] = []
        for name_off, sh_type, flags, addr, offset, size, link, _, _, entsize in raw:
            self.sections.append(
                Section(self._string(names[4], names[5], name_off), sh_type, flags, addr, offset, size, link, entsize)
            )
        self._by_name = {s.name: s for s in self.sections}
        self._symbols: dict[str, Symbol] | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> ElfFile:
        """Read and parse a file.

        Example::

            >>> import sys
            >>> ElfFile.from_path(sys.executable).type in (2, 3)
            True
        """
        with open(path, "rb") as handle:
            return cls(handle.read())

    def _string(self, table_offset: int, table_size: int, offset: int) -> str:
        if offset >= table_size:
            return ""
        start = table_offset + offset
        end = self.data.find(b"\0", start, table_offset + table_size)
        return self.data[start : end if end >= 0 else table_offset + table_size].decode("utf-8", "replace")

    def section(self, name: str) -> Section | None:
        """Section header by name, or None.

        Example::

            >>> import sys
            >>> ElfFile.from_path(sys.executable).section(".no_such_section") is None
            True
        """
        return self._by_name.get(name)

    def section_bytes(self, name: str) -> bytes:
        """File contents of a section (empty for NOBITS sections).

        Example::

            >>> import sys
            >>> ElfFile.from_path(sys.executable).section_bytes(".bss")
            b''
        """
        s = self._by_name[name]
        if s.type == 8:  # SHT_NOBITS
            return b""
        return self.data[s.offset : s.offset + s.size]

    def symbols(self) -> dict[str, Symbol]:
        """Named symbols of .symtab (globals win over locals of the same name).

        Example::

            >>> import sys
            >>> isinstance(ElfFile.from_path(sys.executable).symbols(), dict)
            True
        """
        if self._symbols is None:
            table: dict[str, Symbol] = {}
            symtab = next((s for s in self.sections if s.type == 2), None)  # SHT_SYMTAB
            if symtab is not None:
                strtab = self.sections[symtab.link]
                for i in range(symtab.size // 24):
                    name_off, info, _, shndx, value, size = struct.unpack_from(
                        "<IBBHQQ", self.data, symtab.offset + i * 24
                    )
                    name = self._string(strtab.offset, strtab.size, name_off)
                    if not name:
                        continue
                    symbol = Symbol(name, value, size, info & 0xF, info >> 4, shndx)
                    if name not in table or (table[name].bind == 0 and symbol.bind != 0):
                        table[name] = symbol
            self._symbols = table
        return self._symbols

    def symbol(self, name: str) -> Symbol:
        """A symbol by name; KeyError if absent.

        Example::

            >>> import sys
            >>> "no_such_symbol" in ElfFile.from_path(sys.executable).symbols()
            False
        """
        return self.symbols()[name]

    def program_config(self) -> dict:
        """The emulator program record: NR_TASKLETS and per-tasklet stack sizes.

        Example::

            >>> import sys
            >>> try:
            ...     ElfFile.from_path(sys.executable).program_config()
            ... except ElfError as e:
            ...     print("not a DPU program")
            not a DPU program
        """
        if CONFIG_SECTION not in self._by_name:
            raise ElfError(f"no {CONFIG_SECTION} section: not an updlrm emulator DPU program")
        raw = self.section_bytes(CONFIG_SECTION)
        magic, version, nr_tasklets = struct.unpack_from("<III", raw, 0)
        if magic != CONFIG_MAGIC:
            raise ElfError("corrupt emulator program record")
        stacks = list(struct.unpack_from(f"<{MAX_TASKLETS}I", raw, 12))
        return {"protocol_version": version, "nr_tasklets": nr_tasklets, "stack_sizes": stacks[:nr_tasklets]}
