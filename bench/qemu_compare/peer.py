"""The peer: Debian's qemu-system-x86_64 with its gdbstub on loopback, driven by Debian's gdb
through gdb_driver.py. One QEMU and one gdb per measurement, so no run inherits another's
state."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DRIVER = Path(__file__).resolve().parent / "gdb_driver.py"
KVM_CPU = "host,-arch-capabilities"  # -cpu host alone aborts on MSR 0x10a here (platform-facts 7)


class PeerUnavailable(RuntimeError):
    """QEMU or gdb is missing, or the accelerator cannot be used here."""


@dataclass(frozen=True)
class Peer:
    name: str  # "tcg" or "kvm"
    accel: list[str]
    # kvm_pvm turns an int3 at CPL0 into a KVM emulation failure, which stops QEMU's VM for
    # good ("KVM internal error"): gdb's software breakpoints cannot work there, only the
    # four debug registers (hbreak).
    hardware_breakpoints_only: bool

    def describe(self) -> str:
        return f"QEMU {qemu_version()} ({self.name}) + gdb {gdb_version()}"


def _version(command: list[str]) -> str:
    first = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return first.splitlines()[0].split()[-1] if first else "?"


def qemu_version() -> str:
    return _version(["qemu-system-x86_64", "--version"]).rstrip(")")


def gdb_version() -> str:
    return _version(["gdb", "--version"])


def peers_present() -> dict[str, Peer | str]:
    """name -> Peer, or name -> why it cannot run here."""
    missing = [tool for tool in ("qemu-system-x86_64", "gdb") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (scripts/setup installs them)"
        return {"tcg": reason, "kvm": reason}
    found: dict[str, Peer | str] = {"tcg": Peer("tcg", ["-accel", "tcg"], False)}
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        found["kvm"] = Peer("kvm", ["-accel", "kvm", "-cpu", KVM_CPU],
                            Path("/sys/module/kvm_pvm").exists())
    else:
        found["kvm"] = "/dev/kvm is not usable"
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def qemu_command(peer: Peer, elf: Path, serial: Path, gdb_port: int | None,
                 cpus: int = 1) -> list[str]:
    command = ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-no-reboot",
               "-m", "64", "-smp", str(cpus), *peer.accel,
               "-serial", f"file:{serial}",
               # The guest's exit port (docs/boot.md); QEMU exits with status 2 * v + 1.
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
               "-kernel", str(elf)]
    if gdb_port is not None:
        command += ["-S", "-gdb", f"tcp:127.0.0.1:{gdb_port}"]
    return command


def run_alone(peer: Peer, elf: Path, timeout: float) -> float:
    """Seconds from QEMU's start to its exit, no debugger."""
    with tempfile.TemporaryDirectory() as tmp:
        serial = Path(tmp) / "serial"
        started = time.perf_counter()
        done = subprocess.run(qemu_command(peer, elf, serial, None), capture_output=True,
                              text=True, timeout=timeout, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 1 or b"qbench: done" not in serial.read_bytes():
            raise RuntimeError(f"QEMU ({peer.name}) exited {done.returncode}: "
                               f"{done.stderr[-500:]}")
    return elapsed


def run_gdb(peer: Peer, elf: Path, scenario: str, params: dict, timeout: float,
            cpus: int = 1) -> dict:
    """Run one gdb_driver scenario; returns its JSON, with "timed out" set when gdb was
    still busy after `timeout` seconds (the partial results are kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        result = Path(tmp) / "result.json"
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"elf": str(elf), "port": port, "scenario": scenario,
                                      "params": params, "result": str(result)}))
        qemu = subprocess.Popen(qemu_command(peer, elf, Path(tmp) / "serial", port, cpus),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # No wait for QEMU to listen: gdb's `target remote` retries a refused
            # connection for 15 s (set tcp auto-retry, connect-timeout).
            gdb = subprocess.Popen(["gdb", "-nx", "-batch", "-x", str(DRIVER)],
                                   env={**os.environ, "QB_CONFIG": str(config)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            timed_out = False
            try:
                _, gdb_errors = gdb.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                gdb.kill()
                _, gdb_errors = gdb.communicate()
        finally:
            if qemu.poll() is None:
                qemu.kill()
            _, qemu_errors = qemu.communicate()
        data = json.loads(result.read_text()) if result.exists() else {}
    if timed_out:
        data["timed out"] = timeout
    elif "error" in data or not data:
        raise RuntimeError(f"gdb {scenario} on QEMU ({peer.name}): "
                           f"{data.get('error', 'no result')}; gdb: {gdb_errors[-500:]}; "
                           f"qemu: {qemu_errors.decode(errors='replace')[-500:]}")
    return data

