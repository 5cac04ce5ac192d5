"""Assemble small x86-64 snippets with GNU as, so tests read as assembly, not hex."""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path


@functools.cache
def assemble(source: str, origin: int = 0x100000) -> bytes:
    """Assemble AT&T-syntax `source` as flat code placed at `origin`."""
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, binary = Path(tmp, "a.s"), Path(tmp, "a.o"), Path(tmp, "a.bin")
        src.write_text(f".code64\n.text\n{source}\n")
        result = subprocess.run(["as", "--64", "-o", str(obj), str(src)],
                                capture_output=True, text=True)
        if result.returncode:
            raise ValueError(f"cannot assemble {source!r}: {result.stderr.strip()}")
        linked = Path(tmp, "a.elf")
        subprocess.run(["ld", "-Ttext", hex(origin), "--oformat", "elf64-x86-64", "-e", "0",
                        "-o", str(linked), str(obj)], check=True, capture_output=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(linked), str(binary)],
                       check=True, capture_output=True)
        return binary.read_bytes()


def assemble_elf(source: str, out: Path) -> Path:
    """A guest ELF (entry `_start`, linked at 0x100000) from AT&T assembly."""
    src, obj = out.with_suffix(".s"), out.with_suffix(".o")
    src.write_text(f".code64\n.text\n.globl _start\n{source}\n")
    result = subprocess.run(["as", "--64", "-g", "-o", str(obj), str(src)],
                            capture_output=True, text=True)
    if result.returncode:
        raise ValueError(f"cannot assemble: {result.stderr.strip()}")
    subprocess.run(["ld", "-Ttext", "0x100000", "-e", "_start", "--build-id=none",
                    "-o", str(out), str(obj)], check=True, capture_output=True)
    return out
