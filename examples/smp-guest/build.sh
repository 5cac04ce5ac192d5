#!/bin/sh
# Builds build/guest.elf: a freestanding x86-64 ELF for dap-whpx, with -O0 and DWARF
# so the debugger can show source lines and variables. Needs gcc and GNU ld.
set -eu
cd "$(dirname "$0")"
mkdir -p build
gcc -ffreestanding -nostdlib -static -fno-pic -no-pie -mno-red-zone -mgeneral-regs-only \
    -fno-stack-protector -fno-asynchronous-unwind-tables -fcf-protection=none \
    -O0 -g -Wall -Wextra \
    -Wl,--build-id=none -Wl,-z,max-page-size=0x1000 -Wl,-z,noexecstack -T guest.ld \
    -o build/guest.elf start.S primes.c
echo "built $(pwd)/build/guest.elf"
