"""Ours against QEMU + gdb on the same guest in the same run (bench/vs_qemu.py)."""
