"""The shared libraries an ELF file links (``DT_NEEDED``), read from its bytes with the standard library.

The GPU carry (:mod:`resnext_triton.bench.gpu_carry`) follows these links from tritonserver, the
Python backend and its stub through the libraries the wheel bundles, so that it carries exactly
the libraries that are loaded, read straight out of the wheel without unpacking it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

SHT_DYNAMIC = 6
DT_NULL, DT_NEEDED = 0, 1


class ElfError(ValueError):
    """The bytes are not a 64-bit little-endian ELF file with a dynamic section."""


def needed_libraries(data: bytes) -> list[str]:
    """The ``DT_NEEDED`` entries of a 64-bit little-endian ELF file, in order ([] for a static one).

    Raises:
        ElfError: if ``data`` is not such a file or its section table is cut short.
    """
    if data[:4] != b"\x7fELF" or data[4:6] != b"\x02\x01":
        raise ElfError("not a 64-bit little-endian ELF file")
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names: list[str] = []
        for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
            if sh_type != SHT_DYNAMIC:
                continue
            strtab = sections[link][4]
            for pos in range(offset, offset + size, entsize or 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == DT_NULL:
                    break
                if tag == DT_NEEDED:
                    end = data.index(b"\0", strtab + value)
                    names.append(data[strtab + value : end].decode("ascii"))
        return names
    except (struct.error, IndexError, ValueError) as exc:
        raise ElfError(f"malformed ELF file: {exc}") from exc


def closure(roots: Iterable[str], read: Callable[[str], bytes], available: set[str]) -> list[str]:
    """The libraries among ``available`` that ``roots`` load, directly or through each other (sorted).

    Args:
        roots: names of the files to start from (passed to ``read``).
        read: the bytes of a root or of an available library, by name.
        available: library names that can be followed (the others are the host's: libc, libstdc++...).
    """
    found: set[str] = set()
    todo = list(roots)
    while todo:
        for name in needed_libraries(read(todo.pop())):
            if name in available and name not in found:
                found.add(name)
                todo.append(name)
    return sorted(found)
