"""Reading a guest ELF64 image: loadable segments, entry point and symbols.

Every problem with the file becomes an `ElfError` whose message says what is wrong in
the user's terms; pyelftools' own exceptions never reach the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError as _PyElfError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection


class ElfError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Segment:
    address: int  # guest-physical (p_paddr)
    data: bytes
    memory_size: int
    executable: bool = False


@dataclass(frozen=True)
class ElfImage:
    path: Path
    entry: int
    segments: tuple[Segment, ...]
    symbols: dict[str, int] = field(default_factory=dict)

    def end(self) -> int:
        return max(s.address + s.memory_size for s in self.segments)


def load_elf(path: str | Path) -> ElfImage:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ElfError(f"cannot read {path}: {error.strerror or error}") from None
    if raw[:4] != b"\x7fELF":
        raise ElfError(f"{path} is not an ELF file")
    if len(raw) < 64:
        raise ElfError(f"{path} is truncated (ELF header incomplete)")
    if raw[4] != 2:
        raise ElfError(f"{path} is a 32-bit ELF; the guest must be ELF64 x86-64")
    try:
        return _parse(path, raw)
    except ElfError:
        raise
    except (_PyElfError, ValueError, KeyError, IndexError, EOFError) as error:
        raise ElfError(f"{path} is truncated or corrupt ({error})") from None


def _parse(path: Path, raw: bytes) -> ElfImage:
    import io

    elf = ELFFile(io.BytesIO(raw))
    if elf["e_machine"] != "EM_X86_64":
        raise ElfError(f"{path} is for {elf['e_machine']}, not x86-64")
    if elf["e_type"] != "ET_EXEC":
        raise ElfError(f"{path} is {elf['e_type']}; link the guest as a static executable")
    segments = []
    for segment in elf.iter_segments():
        if segment["p_type"] != "PT_LOAD" or segment["p_memsz"] == 0:
            continue
        offset, size = segment["p_offset"], segment["p_filesz"]
        if offset + size > len(raw):
            raise ElfError(f"{path} is truncated: a segment ends past the end of the file")
        if size > segment["p_memsz"]:
            raise ElfError(f"{path}: a segment's file size exceeds its memory size")
        segments.append(Segment(segment["p_paddr"], raw[offset : offset + size],
                                segment["p_memsz"], bool(segment["p_flags"] & 0x1)))
    if not segments:
        raise ElfError(f"{path} has no loadable segment")
    symbols: dict[str, int] = {}
    for section in elf.iter_sections():
        if isinstance(section, SymbolTableSection):
            for symbol in section.iter_symbols():
                kind = symbol["st_info"]["type"]
                if symbol.name and kind in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE") and \
                        symbol["st_shndx"] != "SHN_UNDEF":
                    symbols.setdefault(symbol.name, symbol["st_value"])
    return ElfImage(path, elf["e_entry"], tuple(segments), symbols)
