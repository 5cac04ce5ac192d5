"""Check every cffi declaration of the WHPX bindings against the Windows SDK headers.

A C file generated from what cffi computed (sizes, offsets, alignments, enum values,
function and callback signatures) is compiled with mingw-w64 against Debian's copy of
`winhvplatform.h` / `winhvemulation.h`; bitfield positions, which C cannot check at
compile time, are compared as the bytes of static objects in the compiled object file.
Needs `x86_64-w64-mingw32-gcc` (scripts/setup installs it), not Windows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from whpx_core.platform.whp import bindings, registers

GCC = "x86_64-w64-mingw32-gcc"
NM = "x86_64-w64-mingw32-nm"
OBJCOPY = "x86_64-w64-mingw32-objcopy"

if shutil.which(GCC) is None:
    # CI installs it (scripts/setup): there a missing compiler is a failure, not a skip.
    if os.environ.get("CI"):
        raise RuntimeError(f"{GCC} missing in CI: scripts/setup should have installed it")
    pytest.skip(f"{GCC} missing (apt packages gcc-mingw-w64-x86-64, mingw-w64-x86-64-dev)",
                allow_module_level=True)


def _fields(ffi, ctype, path: str) -> Iterator[tuple[str, int, int]]:
    """(dotted member path, offset in the outer type, size), padding members left out."""
    for name, field in ctype.fields or ():
        if name.startswith("_"):
            continue  # size padding or a bitfield carrier: checked otherwise
        member = f"{path}.{name}" if path else name
        yield member, field.offset, ffi.sizeof(field.type)
        if field.type.kind in ("struct", "union"):
            for sub, offset, size in _fields(ffi, field.type, member):
                yield sub, field.offset + offset, size


def _signature(text: str) -> str:
    """'HRESULT (A a, B *b)' -> 'HRESULT (WINAPI *)(A a, B *b)'."""
    ret, params = text.split(" (", 1)
    return f"{ret} (WINAPI *)({params}"


def generate_c(b: ModuleType) -> str:
    ffi = b.ffi
    out = ["#include <stddef.h>", "#include <windows.h>", "#include <winhvplatform.h>",
           "#include <winhvemulation.h>", ""]

    def check(condition: str, what: str) -> None:
        out.append(f'_Static_assert({condition}, "{what}");')

    for name in b.STRUCTS:
        ctype = ffi.typeof(name)
        check(f"sizeof({name}) == {ffi.sizeof(ctype)}", f"sizeof {name}")
        align = 16 if name in b.ALIGN16 else ffi.alignof(ctype)
        check(f"_Alignof({name}) == {align}", f"alignof {name}")
        for member, offset, size in _fields(ffi, ctype, ""):
            check(f"offsetof({name}, {member}) == {offset}", f"offsetof {name}.{member}")
            check(f"sizeof((({name} *)0)->{member}) == {size}", f"sizeof {name}.{member}")
    for name in b.SCALARS:
        check(f"sizeof({name}) == {ffi.sizeof(name)}", f"sizeof {name}")
    for name, value in {**b.CONSTANTS, **registers.CONSTANTS}.items():
        check(f"{name} == {value:#x}", name)
    for name, text in b.FUNCTIONS.items():
        check(f"__builtin_types_compatible_p(__typeof__(&{name}), {_signature(text)})",
              f"signature of {name}")
    for name, text in b.CALLBACK_TYPES.items():
        check(f"__builtin_types_compatible_p({name}, {text.replace('(*)', '(CALLBACK *)')})",
              f"signature of {name}")
    for n, ((type_, field), (_, width)) in enumerate(b.BITS.items()):
        out.append(f"const {type_} whp_bit_{n} = {{ .{field} = {(1 << width) - 1:#x} }};")
    return "\n".join(out) + "\n"


def expected_bit_images(b: ModuleType) -> dict[str, bytes]:
    """What each `whp_bit_N` object must hold, built from cffi and `bindings.BITS`."""
    ffi, images = b.ffi, {}
    for n, ((type_, field), (_, width)) in enumerate(b.BITS.items()):
        obj = ffi.new(f"{type_} *")
        carrier = b.BIT_CARRIERS.get(type_) or next(
            name for name, _ in ffi.typeof(type_).fields if name.startswith("As"))
        setattr(obj, carrier, b.with_bit(type_, field, 0, (1 << width) - 1))
        images[f"whp_bit_{n}"] = bytes(ffi.buffer(obj))
    return images


def compile_and_read(source: str, tmp: Path,
                     sizes: dict[str, int]) -> tuple[subprocess.CompletedProcess, dict]:
    """Compile `source` to a PE object; return the compiler's result and, if it built,
    the bytes of every `whp_bit_N` object (`sizes`: their sizes; PE symbols have none)."""
    c, obj = tmp / "whp_layout.c", tmp / "whp_layout.o"
    c.write_text(source)
    result = subprocess.run([GCC, "-std=gnu11", "-c", "-Werror", str(c), "-o", str(obj)],
                            capture_output=True, text=True)
    if result.returncode:
        return result, {}
    rdata = tmp / "rdata.bin"
    subprocess.run([OBJCOPY, "-O", "binary", "-j", ".rdata", str(obj), str(rdata)], check=True)
    data = rdata.read_bytes()
    symbols = subprocess.run([NM, str(obj)], capture_output=True, text=True,
                             check=True).stdout
    found = {}
    for line in symbols.splitlines():
        match = re.match(r"([0-9a-f]+) R (whp_bit_\d+)$", line)
        if match:
            offset = int(match[1], 16)
            found[match[2]] = data[offset:offset + sizes[match[2]]]
    return result, found


def test_bindings_match_the_sdk_headers(tmp_path: Path) -> None:
    source = generate_c(bindings)
    expected = expected_bit_images(bindings)
    result, found = compile_and_read(source, tmp_path, _sizes(expected))
    assert result.returncode == 0, result.stderr[-4000:]
    assert source.count("_Static_assert") > 300  # every struct, field, constant, function
    assert found.keys() == expected.keys()
    wrong = {name: (found[name].hex(), image.hex()) for name, image in expected.items()
             if found[name] != image}
    assert not wrong, f"bitfield positions differ from the SDK (sdk, ours): {wrong}"


def _sizes(images: dict[str, bytes]) -> dict[str, int]:
    return {name: len(image) for name, image in images.items()}


def _drifted_copy(tmp: Path, old: str, new: str) -> ModuleType:
    """The bindings module loaded from a temporary copy with one declaration changed."""
    import importlib.util

    text = Path(bindings.__file__).read_text()
    assert old in text
    path = tmp / "drifted_bindings.py"
    path.write_text(text.replace(old, new, 1))
    spec = importlib.util.spec_from_file_location("drifted_bindings", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_drifted_field_fails_the_check(tmp_path: Path) -> None:
    # Exception parameter declared 32 bits wide: every offset after it moves.
    drifted = _drifted_copy(tmp_path, "UINT32 ErrorCode;\n    UINT64 ExceptionParameter;",
                            "UINT32 ErrorCode;\n    UINT32 ExceptionParameter;")
    result, _ = compile_and_read(generate_c(drifted), tmp_path, {})
    assert result.returncode != 0
    assert "WHV_VP_EXCEPTION_CONTEXT" in result.stderr


def test_a_drifted_signature_fails_the_check(tmp_path: Path) -> None:
    drifted = _drifted_copy(tmp_path, "UINT32 VpIndex, VOID *ExitContext",
                            "UINT64 VpIndex, VOID *ExitContext")
    result, _ = compile_and_read(generate_c(drifted), tmp_path, {})
    assert "signature of WHvRunVirtualProcessor" in result.stderr


def test_a_drifted_bit_position_is_caught(tmp_path: Path) -> None:
    drifted = _drifted_copy(tmp_path, '"SingleStep"): (4, 1)', '"SingleStep"): (5, 1)')
    expected = expected_bit_images(drifted)
    result, found = compile_and_read(generate_c(drifted), tmp_path, _sizes(expected))
    assert result.returncode == 0, result.stderr[-2000:]
    wrong = [name for name, image in expected.items() if found[name] != image]
    index = list(drifted.BITS).index(("WHV_X64_PENDING_DEBUG_EXCEPTION", "SingleStep"))
    assert wrong == [f"whp_bit_{index}"]
