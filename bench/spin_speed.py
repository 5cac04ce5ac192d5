"""Guest instructions per second of the spin guest on each platform, next to raw
Unicorn running the same two-instruction loop in the same run.

    python bench/spin_speed.py [--quick]

The ratio "emulated / raw Unicorn (count-sliced)" shows what the platform itself costs;
"raw Unicorn (free)" shows what bounding slices with count= costs (see
docs/architecture.md for why every slice is bounded).
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import time

from common import build_guest, platforms_present, repeat, save
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as x86

LOOP = bytes.fromhex("48ffc9" "75fb" "f4")  # dec rcx; jnz loop; hlt


def raw_unicorn(iterations: int, sliced: bool) -> float:
    """Instructions/s of the loop on a bare engine, no paging, no platform."""
    buffer = mmap.mmap(-1, 0x200000)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map_ptr(0, len(buffer), UC_PROT_ALL, ctypes.addressof(ctypes.c_char.from_buffer(buffer)))
    uc.mem_write(0x1000, LOOP)
    uc.reg_write(x86.UC_X86_REG_RCX, iterations)
    uc.reg_write(x86.UC_X86_REG_RIP, 0x1000)
    started = time.perf_counter()
    if sliced:
        while uc.reg_read(x86.UC_X86_REG_RCX):
            uc.emu_start(uc.reg_read(x86.UC_X86_REG_RIP), 0, count=50_000)
    else:
        uc.emu_start(0x1000, 0x1000 + len(LOOP) - 1)
    elapsed = time.perf_counter() - started
    return 2 * iterations / elapsed


def platform_speed(platform, elf, iterations: int) -> float:
    from whpx_core.machine.elf_loader import load_elf
    from whpx_core.machine.vm import Machine

    machine = Machine(platform, cpus=1, memory_mib=16)
    image = load_elf(elf)
    machine.load(image)
    machine.partition.write_memory(image.symbols["spin_iterations"],
                                   iterations.to_bytes(8, "little"))
    started = time.perf_counter()
    result = machine.run()
    elapsed = time.perf_counter() - started
    machine.close()
    assert result.exit_code == 0, result
    return 2 * iterations / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    big = 200_000 if args.quick else 20_000_000
    elf = build_guest("spin")
    rows: dict[str, dict[str, float]] = {
        "raw unicorn (free running)": repeat(lambda: raw_unicorn(big, False), runs),
        "raw unicorn (count-sliced)": repeat(lambda: raw_unicorn(big, True), runs),
    }
    skipped: dict[str, str] = {}
    for name, platform in platforms_present().items():
        if isinstance(platform, str):
            skipped[name] = platform
            continue
        # kvm_pvm emulates CPL0 code at ~1.7 M insn/s: keep its run short.
        iterations = big if name == "emulated" else max(10_000, big // 100)
        rows[f"{name} platform"] = repeat(
            lambda p=platform, n=iterations: platform_speed(p, elf, n), runs)
    baseline = rows["raw unicorn (count-sliced)"]["median"]
    print(f"{'what':32} {'median insn/s':>16} {'min':>14} {'max':>14} {'vs raw sliced':>14}")
    for what, stats in rows.items():
        print(f"{what:32} {stats['median']:16,.0f} {stats['min']:14,.0f} {stats['max']:14,.0f}"
              f" {stats['median'] / baseline:14.2f}")
    for name, reason in skipped.items():
        print(f"{name} platform: skipped: {reason}")
    if not args.quick:
        path = save("spin_speed", {"instructions_per_second": rows, "skipped": skipped})
        print(f"saved {path}")


if __name__ == "__main__":
    main()
