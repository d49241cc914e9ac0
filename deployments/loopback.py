"""Serve replicas of a local, loopback-only Ray keep their inter-deployment gRPC port on 127.0.0.1.

Ray Serve 2.60 starts a gRPC server in every replica on ``[::]:0`` (every interface), hard-coded
(``ray.serve._private.replica``), with no option to bind it elsewhere. On a node whose address is
127.0.0.1 (a local Ray started by ``graphs.launch``) nothing outside the machine may reach it, and
nothing outside needs to: every caller connects to the node address. ``keep_replica_grpc_on_loopback``
runs when a replica imports this package, before Serve starts that server; on any other node
(a cluster) it changes nothing.
"""

from __future__ import annotations

from typing import Any

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "[::]:0"


def keep_replica_grpc_on_loopback() -> bool:
    """Bind replicas' inter-deployment gRPC to loopback if this node's address is; True if it did."""
    import ray

    if not ray.is_initialized() or ray.util.get_node_ip_address() != LOOPBACK:
        return False
    from ray.serve._private import replica

    add_port = replica.add_port_to_grpc_server
    if getattr(add_port, "loopback_only", False):
        return True

    def add_loopback_port(server: Any, address: str) -> int:
        return add_port(server, f"{LOOPBACK}:0" if address == ALL_INTERFACES else address)

    add_loopback_port.loopback_only = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_loopback_port
    return True
