"""The Windows Hypervisor Platform backend: WinHvPlatform.dll through cffi (ABI mode).

On Linux the same code runs against `standin.py`, which implements the WHv functions
with their C signatures over the emulated platform (see docs/platforms.md).
"""
