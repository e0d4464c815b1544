"""A dbha config as values: frozen dataclasses and the defaults they take.

One file describes one supervised service on one node: a host that is the
primary of one service and the replica of another runs two supervisors with
two files. ``docs/config.md`` documents every key; the ``DEFAULT_*`` constants
below are the defaults it lists. :mod:`dbha.config.load` builds these values
from a file and checks every key on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from dbha.config.schema import IPAddress, IPInterface

Engine = Literal["postgresql", "mariadb", "mysql"]
ReplicationMode = Literal["sync", "async"]
SyncFallback = Literal["strict", "fallback", "arbiter"]
TargetKind = Literal["icmp", "tcp"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

# ------------------------------------------------------------------ defaults

DEFAULT_STATE_ROOT = Path("/var/lib/dbha")  # state_dir = DEFAULT_STATE_ROOT / service.id
DEFAULT_RUN_DIR = Path("/run/dbha")  # control_socket = DEFAULT_RUN_DIR / "<service.id>.sock"
DEFAULT_AUTO_REJOIN = False
DEFAULT_CRON_PERIOD_MS = 60_000  # how often cron runs `dbha check` rounds (when it does)
DEFAULT_DB_HOST = "127.0.0.1"  # used when neither database.host nor database.socket is set
DEFAULT_DB_PORT: dict[str, int] = {"postgresql": 5432, "mariadb": 3306, "mysql": 3306}
DEFAULT_DB_NAME: dict[str, str] = {"postgresql": "postgres", "mariadb": "mysql", "mysql": "mysql"}
DEFAULT_DB_USER = "dbha"
DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEFAULT_OS_USER: dict[str, str] = {"postgresql": "postgres", "mariadb": "mysql", "mysql": "mysql"}
DEFAULT_REPLICATION_USER: dict[str, str] = {
    "postgresql": "replicator",
    "mariadb": "repl",
    "mysql": "repl",
}
DEFAULT_CONNECT_TIMEOUT_MS = 1000
DEFAULT_STATEMENT_TIMEOUT_MS = 2000
DEFAULT_PROBE_INTERVAL_MS = 500
DEFAULT_HEARTBEAT_INTERVAL_MS = 100
DEFAULT_HEARTBEAT_MISSES = 5
DEFAULT_HEARTBEAT_RISE = 3
DEFAULT_SAFETY_TIMEOUT_MS = 300
DEFAULT_SELF_FENCE_DEADLINE_MS = 1000
DEFAULT_FENCE_COMMAND_TIMEOUT_MS = 5000
DEFAULT_FENCE_STOP_TIMEOUT_MS = 30000
DEFAULT_ARP_COUNT = 3
DEFAULT_ARP_INTERVAL_MS = 200
DEFAULT_ARP_PROBE_MS = 200  # how long the ARP probe before taking the VIP listens
DEFAULT_REPLICATION_MODE: ReplicationMode = "async"
DEFAULT_SYNC_FALLBACK: SyncFallback = "strict"
DEFAULT_MAX_LAG_BYTES = 1024 * 1024
DEFAULT_MAX_LAG_TRANSACTIONS = 100
DEFAULT_MAX_LAG_SECONDS = 10.0
DEFAULT_ARBITER_LEASE_TTL_MS = 5000
DEFAULT_ARBITER_TIMEOUT_MS = 500
DEFAULT_HOOK_TIMEOUT_MS = 5000
DEFAULT_PRE_PROMOTE_TIMEOUT_MS = 2000
DEFAULT_CHECK_INTERVAL_MS = 2000
DEFAULT_CHECK_TIMEOUT_MS = 1000
DEFAULT_CHECK_FALL = 3
DEFAULT_CHECK_RISE = 2
DEFAULT_HTTP_PORT = 8008
DEFAULT_HTTP_MAX_CONNECTIONS = 256
DEFAULT_HTTP_REQUEST_TIMEOUT_MS = 2000
DEFAULT_LOG_FORMAT: LogFormat = "text"
DEFAULT_LOG_LEVEL: LogLevel = "info"

ENGINES: tuple[Engine, ...] = get_args(Engine)
MODES: tuple[ReplicationMode, ...] = get_args(ReplicationMode)
SYNC_FALLBACKS: tuple[SyncFallback, ...] = get_args(SyncFallback)
TARGET_KINDS: tuple[TargetKind, ...] = get_args(TargetKind)
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)

# --------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    id: str
    state_dir: Path
    control_socket: Path
    auto_rejoin: bool
    # Period of the `dbha check` rounds when cron runs them instead of `dbha run`
    # (docs/operations.md): the self-fence deadline a cron round decides with grows by it.
    cron_period_ms: int = DEFAULT_CRON_PERIOD_MS


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    addresses: tuple[IPAddress, ...]  # every address of the peer, for direct DB probes


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    engine: Engine
    host: str | None  # exactly one of host and socket is set
    socket: Path | None
    port: int
    user: str
    dbname: str
    password_file: Path | None
    connect_timeout_ms: int
    statement_timeout_ms: int
    probe_interval_ms: int  # the local probe's cadence (its own, not the tick's)
    # How dbha acts on the server beyond SQL (follow, rejoin, hard fence).
    data_directory: Path | None  # required for PostgreSQL
    bin_directory: Path  # PostgreSQL's programs (pg_ctl, pg_rewind, pg_basebackup)
    os_user: str  # the server's OS account; server-side tools run as it
    start_command: tuple[str, ...] | None  # None: the engine's default
    stop_command: tuple[str, ...] | None  # may contain {mode} (fast | immediate)
    replication_user: str
    replication_passfile: Path | None  # PostgreSQL: pgpass format, owned by os_user
    replication_password_file: Path | None  # MySQL/MariaDB: the password alone, root-only
    aside_directory: Path | None  # where a rejoin keeps what it sets aside

    @property
    def is_postgresql(self) -> bool:
        return self.engine == "postgresql"


@dataclass(frozen=True, slots=True)
class HeartbeatPath:
    name: str
    local_address: IPAddress
    peer_address: IPAddress
    port: int


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    key_file: Path
    interval_ms: int
    misses: int
    rise: int  # consecutive beats before a down path counts as up again
    paths: tuple[HeartbeatPath, ...]

    @property
    def peer_silent_after_ms(self) -> int:
        """How long a path may stay silent before it counts as down."""
        return self.interval_ms * self.misses


@dataclass(frozen=True, slots=True)
class SafetyTarget:
    kind: TargetKind
    host: IPAddress
    port: int | None  # set exactly when kind == "tcp"

    def __str__(self) -> str:
        if self.port is None:
            return f"{self.kind} {self.host}"
        host = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"{self.kind} {host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    targets: tuple[SafetyTarget, ...]
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class FenceConfig:
    self_fence_deadline_ms: int
    command: tuple[str, ...] | None
    command_timeout_ms: int
    watchdog_device: Path | None = None  # the lease keeper pets it (dbha.node.keeper)
    # Bound on stopping the server in the lease keeper's fence, after it is read-only.
    stop_timeout_ms: int = DEFAULT_FENCE_STOP_TIMEOUT_MS


@dataclass(frozen=True, slots=True)
class VipConfig:
    address: IPInterface  # e.g. 198.18.0.100/24: .ip is the VIP, .network its subnet
    interface: str
    arp_count: int
    arp_interval_ms: int
    arp_probe_ms: int = DEFAULT_ARP_PROBE_MS


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    mode: ReplicationMode
    sync_fallback: SyncFallback
    max_lag_bytes: int  # PostgreSQL
    max_lag_transactions: int  # MySQL / MariaDB
    max_lag_seconds: float


@dataclass(frozen=True, slots=True)
class ArbiterConfig:
    endpoints: tuple[str, ...]
    key: str
    lease_ttl_ms: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class HooksConfig:
    on_event: tuple[Path, ...]
    timeout_ms: int
    pre_promote: Path | None = None  # asked before every promotion; may veto it
    pre_promote_timeout_ms: int = 2000  # DEFAULT_PRE_PROMOTE_TIMEOUT_MS


@dataclass(frozen=True, slots=True)
class CheckConfig:
    name: str
    argv: tuple[str, ...]
    interval_ms: int
    timeout_ms: int
    fall: int
    rise: int


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The HTTP door (dbha.node.http): health endpoints, /status and /metrics."""

    address: IPAddress
    port: int
    cert_file: Path | None  # TLS when set, with key_file
    key_file: Path | None
    client_ca_file: Path | None  # client certificates signed by it may read /status, /metrics
    auth_file: Path | None  # "user:password" for basic auth on /status and /metrics
    max_connections: int
    request_timeout_ms: int  # the whole request: connect to last byte written

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: LogFormat
    level: LogLevel


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # the file it was loaded from
    service: ServiceConfig
    node: NodeConfig
    peer: PeerConfig
    database: DatabaseConfig
    heartbeat: HeartbeatConfig
    safety: SafetyConfig
    fence: FenceConfig
    vip: VipConfig
    replication: ReplicationConfig
    arbiter: ArbiterConfig | None  # set exactly when mode is sync and sync_fallback "arbiter"
    hooks: HooksConfig
    checks: tuple[CheckConfig, ...]
    log: LogConfig
    http: HttpConfig | None = None  # the HTTP door: off unless [http] is given
