"""Rendering socket addresses the way OpenSSH's log lines do."""

from __future__ import annotations


def host_port(host: str, port: int) -> str:
    """C{host:port}, with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_address(address: object) -> str:
    """C{host:port} for an IPv4/IPv6 address object, C{str()} for anything else."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return host_port(host, port)
    return str(address)
