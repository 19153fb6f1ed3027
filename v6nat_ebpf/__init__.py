"""v6nat_ebpf: IPv6 NAT for Docker ULA networks in TC eBPF."""
__version__ = "0.1.0"
