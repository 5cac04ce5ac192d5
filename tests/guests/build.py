"""Build the sample guests (freestanding x86-64 ELF, docs/boot.md) with gcc and GNU ld.

Usable three ways:

- ``from tests.guests.build import build_guest`` (or load this file by path: it has no
  package-relative imports);
- ``build_guest("hello", out_dir, opt="-O2", dwarf=4)`` returns the ELF's path;
- ``python tests/guests/build.py [OUT_DIR] [--opt=-O2] [--dwarf=4] [NAME ...]``.

A ``NAME.c`` guest is linked with the runtime (start.S, traps.S, rt.c); a ``NAME.S``
guest is standalone and brings its own ``_start``. Outputs are named
``NAME<opt>-dwarf<N>.elf`` (``hello-O0-dwarf5.elf``) so builds with different options can
sit side by side, and are rebuilt only when a source, the linker script or this file is
newer than the output.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parent
DEFAULT_OUT_DIR = GUEST_DIR / "build"  # ignored by git
LINKER_SCRIPT = GUEST_DIR / "guest.ld"

GUESTS: tuple[str, ...] = ("hello", "smp", "faults", "timer", "spin", "tfprobe", "selfdebug",
                           "srcdemo")

# Extra sources linked into one guest (e.g. an assembly function called from its C code).
EXTRA_SOURCES: dict[str, tuple[str, ...]] = {"srcdemo": ("srcdemo_asm.S",)}

# Linked into every C guest.
RUNTIME_SOURCES: tuple[str, ...] = ("start.S", "traps.S", "rt.c")
RUNTIME_HEADERS: tuple[str, ...] = ("rt.h",)

COMMON_FLAGS: tuple[str, ...] = (
    "-ffreestanding",
    "-fno-pic",
    "-no-pie",
    "-nostdlib",
    "-static",
    "-mno-red-zone",  # interrupts push onto the interrupted stack, no red zone is safe
    "-mcmodel=small",  # everything is linked below 2 GiB (at 1 MiB)
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",  # .debug_frame (from -g) is enough for a debugger
    "-fcf-protection=none",  # no endbr64 noise in the disassembly
    # No SSE/x87 code from the compiler (-O2 vectorises plain loops otherwise): KVM's
    # instruction emulator, which runs CPL0 code on kvm_pvm hosts, cannot do most SSE.
    "-mgeneral-regs-only",
    "-Wall",
    "-Wextra",
    "-Wl,--build-id=none",  # the note would otherwise take the load address
    "-Wl,-z,max-page-size=0x1000",
    "-Wl,-z,noexecstack",
)

_OPT_RE = re.compile(r"-O[0-3sgz]?|-Ofast")


class GuestBuildError(RuntimeError):
    """gcc failed (the message includes the command and gcc's stderr), or bad input."""


def output_name(name: str, opt: str = "-O0", dwarf: int = 5) -> str:
    return f"{name}{opt}-dwarf{dwarf}.elf"


def guest_source(name: str) -> Path:
    for ext in (".c", ".S"):
        path = GUEST_DIR / f"{name}{ext}"
        if path.is_file():
            return path
    raise GuestBuildError(f"no guest source {name}.c or {name}.S in {GUEST_DIR}")


def _inputs(source: Path) -> list[Path]:
    """Everything the output depends on."""
    deps = [source, LINKER_SCRIPT, Path(__file__).resolve()]
    deps += [GUEST_DIR / f for f in EXTRA_SOURCES.get(source.stem, ())]
    if source.suffix == ".c":
        deps += [GUEST_DIR / f for f in RUNTIME_SOURCES + RUNTIME_HEADERS]
    return deps


def _up_to_date(out: Path, deps: list[Path]) -> bool:
    try:
        built = out.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    return all(dep.stat().st_mtime_ns <= built for dep in deps)


def _compiler() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise GuestBuildError("gcc not found on PATH (the guests need gcc and GNU ld)")
    return gcc


def build_guest(name: str, out_dir: Path, *, opt: str = "-O0", dwarf: int = 5) -> Path:
    """Compile and link guest `name`; return the path of the ELF (cached)."""
    if not _OPT_RE.fullmatch(opt):
        raise GuestBuildError(f"unsupported optimisation option {opt!r}")
    if dwarf not in (2, 3, 4, 5):
        raise GuestBuildError(f"unsupported DWARF version {dwarf!r}")
    source = guest_source(name)
    out_dir = Path(out_dir)
    out = out_dir / output_name(name, opt, dwarf)
    deps = _inputs(source)
    if _up_to_date(out, deps):
        return out

    sources = [source]
    if source.suffix == ".c":
        sources = [GUEST_DIR / f for f in RUNTIME_SOURCES] + sources
    sources += [GUEST_DIR / f for f in EXTRA_SOURCES.get(name, ())]
    out_dir.mkdir(parents=True, exist_ok=True)
    # Link to a temporary name and rename: concurrent builders (pytest-xdist) never see
    # a half-written ELF, and a failed build leaves no stale output behind.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [
        _compiler(),
        *COMMON_FLAGS,
        opt,
        "-g",
        f"-gdwarf-{dwarf}",
        f"-I{GUEST_DIR}",
        "-T",
        str(LINKER_SCRIPT),
        "-o",
        str(tmp),
        *map(str, sources),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise GuestBuildError(
                f"building guest {name!r} failed (exit {proc.returncode}):\n"
                f"$ {' '.join(cmd)}\n{proc.stderr}{proc.stdout}"
            )
        tmp.chmod(0o755)  # mkstemp made it 0600, and ld only adds execute bits
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def build_all(out_dir: Path, *, opt: str = "-O0", dwarf: int = 5) -> dict[str, Path]:
    return {name: build_guest(name, out_dir, opt=opt, dwarf=dwarf) for name in GUESTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the dap-whpx sample guests.")
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("names", nargs="*", help=f"guests to build (default: all of {GUESTS})")
    parser.add_argument("--opt", default="-O0", help="optimisation flag, e.g. --opt=-O2")
    parser.add_argument("--dwarf", type=int, default=5, help="DWARF version (2-5)")
    args = parser.parse_args(argv)
    try:
        for name in args.names or GUESTS:
            print(build_guest(name, args.out_dir, opt=args.opt, dwarf=args.dwarf))
    except GuestBuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
