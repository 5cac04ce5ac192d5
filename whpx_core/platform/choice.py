"""Which platform to run on: `auto`, or an explicit name that must be available."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from whpx_core.platform.base import Platform, PlatformUnavailable

NAMES = ("auto", "emulated", "kvm", "whp")


@dataclass(frozen=True)
class Choice:
    platform: Platform
    note: str | None = None  # one line for the user when auto fell back


def _emulated() -> Platform:
    from whpx_core.platform.emulated.platform import EmulatedPlatform

    reason = EmulatedPlatform.probe()
    if reason:
        raise PlatformUnavailable(f"emulated platform unavailable: {reason}")
    return EmulatedPlatform()


def _kvm() -> Platform:
    try:
        from whpx_core.platform.kvm.platform import KvmPlatform
    except ImportError as error:
        raise PlatformUnavailable(f"KVM backend unavailable: {error}") from None
    reason = KvmPlatform.probe()
    if reason:
        raise PlatformUnavailable(f"KVM unavailable: {reason}")
    return KvmPlatform()


def _whp() -> Platform:
    if sys.platform != "win32":
        raise PlatformUnavailable(
            "WHPX needs Windows with the Windows Hypervisor Platform feature enabled")
    from whpx_core.platform.whp.partition import WhpPlatform

    reason = WhpPlatform.probe()  # the capability query: is the hypervisor present?
    if reason:
        raise PlatformUnavailable(f"WHPX unavailable: {reason}")
    return WhpPlatform()


def prepare_main_thread() -> None:
    """Call once from the main thread of a program that creates VMs on other threads
    (the DAP server does): KVM kicks vCPUs with a signal whose handler only the main
    thread can install."""
    if sys.platform.startswith("linux"):
        import signal

        # Any Python-level handler makes the kick interrupt KVM_RUN; installed here
        # without importing the KVM backend (cffi), which costs start-up time.
        if not callable(signal.getsignal(signal.SIGUSR1)):
            signal.signal(signal.SIGUSR1, _ignore_kick)


def _ignore_kick(signum: int, frame: object) -> None:
    """The KVM kick signal (SIGUSR1): only its arrival matters."""


def choose(name: str) -> Choice:
    if name not in NAMES:
        raise PlatformUnavailable(
            f"unknown platform {name!r}; choose one of: {', '.join(NAMES)}")
    if name == "emulated":
        return Choice(_emulated())
    if name == "kvm":
        return Choice(_kvm())
    if name == "whp":
        return Choice(_whp())
    notes = []
    if sys.platform == "win32":
        try:
            return Choice(_whp())
        except PlatformUnavailable as error:
            notes.append(str(error))
    try:
        kvm = _kvm()
    except PlatformUnavailable as error:
        notes.append(str(error))
    else:
        if not getattr(kvm, "is_pvm", False):
            return Choice(kvm)
        notes.append("/dev/kvm is kvm_pvm here (a paravirtual KVM that emulates CPL0 guest "
                     "code at about 1.9 M instructions/s), so auto picks emulated; "
                     "--platform kvm still uses it")
    return Choice(_emulated(), "; ".join(notes) or None)
