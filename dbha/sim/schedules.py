"""Random fault schedules from a seed, and the configs they run with.

A schedule is everything one simulated run needs: the pair's config (timing
profile, replication mode and fallback, automatic rejoin), the two clocks,
and a list of faults with their start and end steps. The same seed always
gives the same schedule, and the simulation is deterministic given it, so a
failing seed replays exactly.

About a quarter of the schedules are *single-path* schedules: every fault in
them hits one heartbeat path only (cut, one-way cut, loss with jitter,
duplication). A failover in one of them is a violation of the invariant "a
single path failure never causes a failover".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

from dbha.config import Config, from_dict

NODES = ("a", "b")

# Timing profiles: (interval_ms, misses, safety timeout_ms, self_fence_deadline_ms).
PROFILES = {
    "default": (100, 5, 300, 1000),
    "fast": (50, 4, 150, 500),
}
MODES = ("async", "strict", "fallback", "arbiter")
SIM_MAX_LAG = 25

# Fault kinds. "Disruptive" faults may legitimately cause a failover; the
# single-path ones never may.
SINGLE_PATH = ("path_down", "path_oneway", "path_loss", "path_dup")
NODE_FAULTS = (
    "isolate",
    "kill_host",
    "kill_db",
    "hang_db",
    "freeze",
    "stall",
    "check_fail",
    "unknown_safety",
    "replay_pause",
    "client_cut",
    "restart",
)
PAIR_FAULTS = ("beats_blocked", "split", "gateway_down", "repl_stall")
OPERATOR = ("switchover", "maintenance", "failover")
# Faults after which a failover is legitimate (used by the single-path invariant).
DISRUPTIVE = frozenset(
    {"isolate", "kill_host", "kill_db", "hang_db", "freeze", "check_fail", "split", "restart"}
    | {"switchover", "failover", "gateway_down"}
)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    start: int  # step at which it begins
    end: int  # step at which it is undone (exclusive)
    node: int = 0  # target node (node faults) or source node (one-way cuts)
    path: int = 0  # target path (path faults)
    value: float = 0.0  # loss or duplication probability
    jitter: int = 0  # extra delay in steps (path_loss)

    def describe(self) -> str:
        where = {
            "path_down": f"path {self.path}",
            "path_oneway": f"path {self.path} from {NODES[self.node]}",
            "path_loss": f"path {self.path} loss {self.value:.2f} jitter {self.jitter}",
            "path_dup": f"path {self.path} dup {self.value:.2f}",
        }.get(self.kind, NODES[self.node] if self.kind in NODE_FAULTS + OPERATOR else "")
        return f"{self.kind} {where}".strip()


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    profile: str
    mode: str
    auto_rejoin: bool
    single_path: bool
    clocks: tuple[tuple[float, float], tuple[float, float]]  # (offset, rate) per node
    first_primary: int
    faults: tuple[Fault, ...]
    quiet_from: int  # step from which no fault is active
    steps: int  # total steps
    step_s: float  # seconds per step

    def describe(self) -> str:
        lines = [
            f"seed {self.seed}: profile {self.profile}, mode {self.mode}, "
            f"auto_rejoin {self.auto_rejoin}, {'single-path' if self.single_path else 'general'}"
            f", first primary {NODES[self.first_primary]}, {self.steps} steps of "
            f"{self.step_s * 1000:g} ms",
            f"  clocks: a offset {self.clocks[0][0]:.1f} rate {self.clocks[0][1]:.4f}, "
            f"b offset {self.clocks[1][0]:.1f} rate {self.clocks[1][1]:.4f}",
        ]
        for f in self.faults:
            lines.append(
                f"  {f.start * self.step_s:6.2f}-{f.end * self.step_s:6.2f} s  {f.describe()}"
            )
        return "\n".join(lines)


@cache
def config_for(node: int, profile: str, mode: str, auto_rejoin: bool) -> Config:
    """The config of node ``node`` (0 = a, 1 = b) for the given run parameters."""
    interval, misses, safety_ms, deadline = PROFILES[profile]
    me, peer = NODES[node], NODES[1 - node]
    addr = ("198.18.0.11", "198.18.0.12")
    hb = ("198.18.1.1", "198.18.1.2")
    # One simulated write is one "byte" of WAL: a bound of 25 writes makes the lag
    # bound bite in the schedules (replication stalls, then the primary dies).
    replication: dict[str, object] = {
        "mode": "async" if mode == "async" else "sync",
        "max_lag_bytes": SIM_MAX_LAG,
    }
    if mode != "async":
        replication["sync_fallback"] = mode
    data: dict[str, object] = {
        "service": {
            "id": "sim",
            "state_dir": f"/nonexistent/sim-{me}",
            "auto_rejoin": auto_rejoin,
        },
        "node": {"name": me},
        "peer": {"name": peer},
        "database": {
            "engine": "postgresql",
            "data_directory": f"/nonexistent/sim-{me}/data",
            "replication_passfile": "/nonexistent/pgpass",
        },
        "heartbeat": {
            "key_file": "/nonexistent/key",
            "interval_ms": interval,
            "misses": misses,
            "path": [
                {
                    "name": "lan",
                    "local_address": addr[node],
                    "peer_address": addr[1 - node],
                    "port": 5405,
                },
                {
                    "name": "hb",
                    "local_address": hb[node],
                    "peer_address": hb[1 - node],
                    "port": 5405,
                },
            ],
        },
        "safety": {"timeout_ms": safety_ms, "target": [{"kind": "icmp", "host": "198.18.0.1"}]},
        "fence": {"self_fence_deadline_ms": deadline},
        "vip": {"address": "198.18.0.100/24", "interface": "eth0"},
        "replication": replication,
    }
    if mode == "arbiter":
        data["arbiter"] = {"endpoints": ["http://198.18.0.5:2379"]}
    return from_dict(data, f"<sim {me}>")


def generate(seed: int) -> Schedule:
    """The schedule of ``seed``."""
    rng = random.Random(seed)
    profile = "default" if rng.random() < 0.6 else "fast"
    interval_ms = PROFILES[profile][0]
    step_s = interval_ms / 2000.0
    mode = rng.choice(MODES)
    auto_rejoin = rng.random() < 0.5
    single = rng.random() < 0.25

    # Durations scale with the timing profile (counted in heartbeat intervals), so
    # a fast-profile schedule is no longer in steps than a default one.
    def steps(intervals: float) -> int:
        return max(1, round(2 * intervals))

    # Warm-up: the pair starts and settles; then faults; then quiet until the end.
    warmup = steps(10)
    phase = steps(40)
    faults: list[Fault] = []
    count = rng.randint(1, 3) if single else rng.randint(1, 4)
    path = rng.randrange(2)  # single-path schedules hit one path only
    for _ in range(count):
        start = warmup + rng.randrange(phase)
        end = start + steps(rng.uniform(2, 30))
        if single:
            kind = rng.choice(SINGLE_PATH)
        else:
            r = rng.random()
            if r < 0.15:
                kind = rng.choice(SINGLE_PATH)
                path = rng.randrange(2)
            elif r < 0.70:
                kind = rng.choice(NODE_FAULTS)
            elif r < 0.88:
                kind = rng.choice(PAIR_FAULTS)
            else:
                kind = rng.choice(OPERATOR)
        node = rng.randrange(2)
        value = 0.0
        jitter = 0
        if kind == "path_loss":
            value = rng.uniform(0.1, 0.5)
            jitter = rng.randint(0, 2)
        elif kind == "path_dup":
            value = rng.uniform(0.2, 1.0)
        if any(f.kind == kind and f.node == node and f.path == path for f in faults):
            continue  # one fault of a kind per target: starts and ends stay paired
        faults.append(Fault(kind, start, end, node, path, value, jitter))
    faults.sort(key=lambda f: (f.start, f.kind))
    quiet_from = max(f.end for f in faults) if faults else warmup
    bound = round(convergence_seconds(profile) / step_s)
    total = quiet_from + bound + steps(10)
    clocks = (
        (rng.uniform(0, 10_000.0), 1.0 + rng.uniform(-0.005, 0.005)),
        (rng.uniform(0, 10_000.0), 1.0 + rng.uniform(-0.005, 0.005)),
    )
    return Schedule(
        seed=seed,
        profile=profile,
        mode=mode,
        auto_rejoin=auto_rejoin,
        single_path=single,
        clocks=clocks,
        first_primary=rng.randrange(2),
        faults=tuple(faults),
        quiet_from=quiet_from,
        steps=total,
        step_s=step_s,
    )


def convergence_seconds(profile: str) -> float:
    """How long after the faults stop the pair may take to converge: a handover
    that began just before must time out (3 deadlines + 2 path timeouts), then the
    old primary resumes once its peer hears it (well under a deadline), plus slack.
    The longest seen in 100,000 schedules is reported in docs/state-machine.md."""
    interval_ms, misses, _, deadline_ms = PROFILES[profile]
    d = deadline_ms / 1000.0
    silent = interval_ms * misses / 1000.0
    return 3 * d + 2 * silent + d + 0.5


def convergence_bound(s: Schedule) -> int:
    """Steps after ``quiet_from`` by which the pair must have converged."""
    return round(convergence_seconds(s.profile) / s.step_s)
