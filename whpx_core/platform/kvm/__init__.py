"""Linux KVM platform (cffi ioctls on /dev/kvm); see platform.py."""

from whpx_core.platform.kvm.platform import KvmPartition, KvmPlatform, install_kick_handler
from whpx_core.platform.kvm.vcpu import KvmVcpu

__all__ = ["KvmPartition", "KvmPlatform", "KvmVcpu", "install_kick_handler"]
