"""`python -m whpx_core run GUEST.elf`: boot a guest, print its serial output, exit with
its exit code. Bad input gets one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import sys

from whpx_core.machine.elf_loader import ElfError, load_elf
from whpx_core.machine.vm import Machine, MachineError
from whpx_core.platform.base import PlatformError, PlatformUnavailable
from whpx_core.platform.choice import NAMES, choose

EXIT_USAGE = 2
EXIT_VM_FAILED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m whpx_core",
                                     description="Run x86-64 guests on WHPX, KVM or emulation.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="boot an ELF64 guest and run it to its end")
    run.add_argument("guest", help="guest ELF64 executable (see docs/boot.md)")
    run.add_argument("--cpus", type=int, default=1, help="number of vCPUs (default 1)")
    run.add_argument("--memory", type=int, default=64, metavar="MiB",
                     help="guest RAM in MiB (default 64)")
    run.add_argument("--platform", default="auto", choices=NAMES,
                     help="hypervisor platform (default auto)")
    run.add_argument("--quiet", action="store_true", help="no platform line on stderr")
    return parser


def _write_output(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    if data == b"\n":
        sys.stdout.buffer.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        choice = choose(args.platform)
        image = load_elf(args.guest)
        machine = Machine(choice.platform, cpus=args.cpus, memory_mib=args.memory,
                          on_output=_write_output)
        machine.load(image)
    except (PlatformUnavailable, ElfError, MachineError, PlatformError) as error:
        print(f"whpx_core: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not args.quiet:
        if choice.note:
            print(f"whpx_core: note: {choice.note}", file=sys.stderr)
        print(f"whpx_core: platform: {choice.platform.describe()}", file=sys.stderr)
    try:
        result = machine.run()
    finally:
        sys.stdout.buffer.flush()
        machine.close()
    if result.reason in ("shutdown", "error"):
        print(f"whpx_core: guest failed: {result.message}", file=sys.stderr)
        return EXIT_VM_FAILED
    if result.message and not args.quiet:
        print(f"whpx_core: {result.message}", file=sys.stderr)
    return result.exit_code & 0xFF
