"""Redis's memory, clients and keyspace (the reference's Monitoring section), one entry per node
on a Redis Cluster."""

from __future__ import annotations

import json
from typing import Any

import redis

from daemon.store.client import server_info


def info_report(client: redis.Redis) -> dict[str, dict[str, Any]]:
    sections = {s: server_info(client, s) for s in ("memory", "clients", "keyspace", "server")}
    return {
        node: {
            "redis_version": sections["server"][node].get("redis_version"),
            "used_memory": sections["memory"][node].get("used_memory_human"),
            "max_memory": sections["memory"][node].get("maxmemory_human"),
            "connected_clients": sections["clients"][node].get("connected_clients"),
            "keyspace": sections["keyspace"][node],
        }
        for node in sections["server"]
    }


def render_info(nodes: dict[str, dict[str, Any]]) -> str:
    lines = []
    for node, info in nodes.items():
        lines += [
            f"Redis {info['redis_version']} at {node}",
            f"Used Memory: {info['used_memory']}",
            f"Max Memory: {info['max_memory']}",
            f"Active connections: {info['connected_clients']}",
            f"Database info: {json.dumps(info['keyspace'])}",
        ]
    return "\n".join(lines)
