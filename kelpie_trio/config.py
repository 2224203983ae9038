"""Server settings: command-line flags over `KELPIE_*` environment variables over defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs

from kelpie_trio.tools.isolation import ToolSettings
from kelpie_trio.tools.web import WebSettings

__all__ = ["ServerConfig", "StartupError"]

StoreKind = Literal["sqlite", "memory", "fdb"]


class StartupError(Exception):
    """The server cannot start as configured (a port in use, a data directory that is a
    file, a store whose library is missing): `kelpie-trio serve` prints it as one line
    and exits with status 2."""


def _number(env: Mapping[str, str], name: str, kind: type[int] | type[float]) -> object:
    try:
        return kind(env[name])
    except ValueError:
        raise ValueError(f"{name}={env[name]!r} is not a number") from None


def _default_data_dir() -> Path:
    return Path("~/.kelpie-trio").expanduser()


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8283
    store: StoreKind = "sqlite"
    data_dir: Path = attrs.field(factory=_default_data_dir)
    db: Path | None = None  # the SQLite file; default: <data_dir>/kelpie.db
    fdb_cluster_file: str | None = None
    graceful_timeout: float = 10.0
    # How other nodes reach this one (default: the address it binds); a secret
    # every node of a cluster shares for its internal routes.
    advertise_url: str | None = None
    cluster_token: str | None = None
    password: str | None = None  # when set, every route but health needs it as a Bearer token
    idle_timeout: float = 300.0  # deactivate an agent after this long without a message
    lease_ttl: float = 10.0  # how long a crashed node's agents wait before another takes over
    # Seconds each reply of the simulated model (`sim/...`) takes: fixed, so a benchmark on the
    # offline model can stand in for a provider of known latency.
    sim_latency: float = 0.0
    # How long send_message_to_agent_and_wait_for_reply waits for the other agent's answer
    # before the call is a tool error (the other agent's turn goes on).
    agent_wait_timeout: float = 300.0
    # Custom tools: the sandbox's limits and what to do without namespaces (KELPIE_TOOL_*).
    tools: ToolSettings = attrs.Factory(ToolSettings)
    # fetch_webpage and web_search: addresses allowed, limits, Exa's key (KELPIE_WEB_*).
    web: WebSettings = attrs.Factory(WebSettings)

    @property
    def db_path(self) -> Path:
        return self.db or self.data_dir / "kelpie.db"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> ServerConfig:
        """Defaults, then KELPIE_* variables, then `overrides` (flags given on the command line)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if "KELPIE_HOST" in env:
            values["host"] = env["KELPIE_HOST"]
        if "KELPIE_PORT" in env:
            values["port"] = _number(env, "KELPIE_PORT", int)
        if "KELPIE_DATA_DIR" in env:
            values["data_dir"] = Path(env["KELPIE_DATA_DIR"]).expanduser()
        if "KELPIE_DB" in env:
            values["db"] = Path(env["KELPIE_DB"]).expanduser()
        if "KELPIE_FDB_CLUSTER_FILE" in env:
            values["fdb_cluster_file"] = env["KELPIE_FDB_CLUSTER_FILE"]
            values["store"] = "fdb"
        if "KELPIE_STORE" in env:
            values["store"] = env["KELPIE_STORE"]
        if "KELPIE_ADVERTISE_URL" in env:
            values["advertise_url"] = env["KELPIE_ADVERTISE_URL"]
        if "KELPIE_CLUSTER_TOKEN" in env:
            values["cluster_token"] = env["KELPIE_CLUSTER_TOKEN"]
        if env.get("KELPIE_SERVER_PASSWORD"):
            values["password"] = env["KELPIE_SERVER_PASSWORD"]
        if "KELPIE_LEASE_TTL" in env:
            values["lease_ttl"] = _number(env, "KELPIE_LEASE_TTL", float)
        if "KELPIE_IDLE_TIMEOUT" in env:
            values["idle_timeout"] = _number(env, "KELPIE_IDLE_TIMEOUT", float)
        if env.get("KELPIE_AGENT_WAIT_TIMEOUT"):
            values["agent_wait_timeout"] = _number(env, "KELPIE_AGENT_WAIT_TIMEOUT", float)
        if env.get("KELPIE_SIM_LATENCY"):
            values["sim_latency"] = _number(env, "KELPIE_SIM_LATENCY", float)
        values["tools"] = ToolSettings.from_env(env)
        values["web"] = WebSettings.from_env(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)  # type: ignore[arg-type]
        if config.store not in ("sqlite", "memory", "fdb"):
            raise ValueError(f"unknown store {config.store!r}: use sqlite, memory or fdb")
        if not config.agent_wait_timeout > 0:
            raise ValueError(f"agent_wait_timeout {config.agent_wait_timeout} must be positive")
        if not 0 <= config.port <= 65535:
            raise ValueError(f"port {config.port} is not a TCP port (0 to 65535; 0 picks one)")
        return config
