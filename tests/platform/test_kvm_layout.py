"""Check every cffi declaration in the KVM bindings against <linux/kvm.h>, with gcc.

The C file is generated from what cffi computed (sizes, offsets, ioctl numbers,
constants), so a drifted cdef fails here with the exact field named. Needs gcc and the
kernel headers, not /dev/kvm.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from whpx_core.platform.kvm import bindings
from whpx_core.platform.kvm.bindings import ffi


def _fields(ctype: ffi.CType, path: str) -> Iterator[tuple[str, int, int | None]]:
    """(dotted member path, offset relative to the outer struct, size or None)."""
    for name, field in ctype.fields or ():
        member = f"{path}.{name}" if path else name
        ftype = field.type
        flexible = ftype.kind == "array" and ftype.length is None
        yield member, field.offset, None if flexible else ffi.sizeof(ftype)
        if ftype.kind in ("struct", "union"):
            for sub, offset, size in _fields(ftype, member):
                yield sub, field.offset + offset, size


def generate_c() -> str:
    lines = ["#include <stddef.h>", "#include <linux/kvm.h>", ""]
    for struct in bindings.STRUCTS:
        ctype = ffi.typeof(f"struct {struct}")
        c = f"struct {struct}"
        lines.append(f'_Static_assert(sizeof({c}) == {ffi.sizeof(ctype)}, "sizeof {c}");')
        for member, offset, size in _fields(ctype, ""):
            lines.append(
                f'_Static_assert(offsetof({c}, {member}) == {offset}, "offsetof {c}.{member}");'
            )
            if size is not None:
                lines.append(
                    f"_Static_assert(sizeof((({c} *)0)->{member}) == {size}, "
                    f'"sizeof {c}.{member}");'
                )
    for ioctl in bindings.Ioctl:
        lines.append(f'_Static_assert({ioctl.name} == {int(ioctl):#x}UL, "{ioctl.name}");')
    for name, value in bindings.CONSTANTS.items():
        lines.append(f'_Static_assert({name} == {value:#x}, "{name}");')
    return "\n".join(lines) + "\n"


def test_layout_matches_kernel_header(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: cannot compile the layout asserts")
    if not Path("/usr/include/linux/kvm.h").exists():
        pytest.skip("/usr/include/linux/kvm.h missing (install linux-libc-dev)")
    source = tmp_path / "kvm_layout.c"
    source.write_text(generate_c())
    result = subprocess.run(
        [gcc, "-std=gnu11", "-fsyntax-only", "-Werror", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_generated_checks_cover_nested_fields() -> None:
    text = generate_c()
    # The fields the run loop reads must be among the asserts, not only the sizes.
    for needle in (
        "offsetof(struct kvm_run, debug.arch.dr6) == 48",
        "offsetof(struct kvm_run, io.data_offset) == 40",
        "offsetof(struct kvm_run, internal.data) == 40",
        "offsetof(struct kvm_run, s.regs.sregs) == 448",
        "offsetof(struct kvm_vcpu_events, interrupt.shadow) == 11",
        "KVM_RUN == 0xae80UL",
    ):
        assert needle in text, needle


def test_layout_check_catches_a_wrong_offset(tmp_path: Path) -> None:
    """The harness itself must fail on a mismatch (guards against asserts that never run)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found")
    source = tmp_path / "bad.c"
    source.write_text(
        "#include <stddef.h>\n#include <linux/kvm.h>\n"
        '_Static_assert(offsetof(struct kvm_run, kvm_valid_regs) == 280, "x");\n'
    )
    result = subprocess.run(
        [gcc, "-std=gnu11", "-fsyntax-only", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
