"""dap-whpx: a Debug Adapter Protocol server for guests on WHPX, KVM or emulation."""

__version__ = "0.1.0"
