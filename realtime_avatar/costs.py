"""What a month of the deployed avatar costs: Cloud Run L4 runtime, web service, TURN VM, storage.

Prices and usage come from ``cost:`` in ``avatar.yaml`` (each price with its source and date); the
session caps come from ``chat:`` (the runtime enforces the same ``max_session_minutes`` and
``max_sessions``), so the estimate and the cost guard cannot drift apart.

The runtime's bill is instance time, not session time: Cloud Run GPU instances are billed for their
whole life, from the cold start to the end of the idle window after the last request. Sessions arrive
at random within the owner's active hours, so whether two sessions share one instance's idle window
depends on how they fall; the month is simulated (seeded, averaged over several draws) rather than
multiplied out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

SECONDS_PER_MONTH = 30 * 24 * 3600
HOURS_PER_MONTH = 730  # the convention of Google's monthly VM and IP prices
GIB = 2**30


class Price(BaseModel):
    usd: float = Field(ge=0)
    unit: str
    source: str
    date: str  # when the price was read or reported (YYYY-MM)


class CostPrices(BaseModel):
    gpu_l4_s: Price  # one L4, GPU zonal redundancy off, instance-based billing
    vcpu_s: Price  # instance-based billing
    memory_gib_s: Price
    web_vcpu_s: Price  # request-based billing (the web service)
    web_memory_gib_s: Price
    web_free_vcpu_s: float = Field(default=180_000, ge=0)  # Cloud Run's monthly free tier
    web_free_gib_s: float = Field(default=360_000, ge=0)
    turn_vm_month: Price
    turn_disk_gib_month: Price
    static_ip_hour: Price
    egress_gib: Price
    gcs_gib_month: Price
    registry_gib_month: Price
    secret_version_month: Price


class CostUsage(BaseModel):
    sessions_per_month: int = Field(default=200, ge=0)
    minutes_per_session: float = Field(default=10.0, gt=0)
    active_hours_per_day: float = Field(default=14.0, gt=0, le=24)  # when visitors come
    idle_after_session_s: float = Field(default=900.0, ge=0)  # Cloud Run keeps an idle instance (billed)
    cold_start_s: float = Field(default=45.0, ge=0)  # first request -> first frame on a cold L4
    relay_kbps: float = Field(default=700.0, ge=0)  # avatar audio + video relayed by TURN to the browser
    web_vcpu: float = Field(default=1.0, gt=0)
    web_memory_gib: float = Field(default=0.5, gt=0)


class CostInstance(BaseModel):
    """The runtime's Cloud Run instance (infra/ takes the same values: tests keep them equal)."""

    vcpu: int = Field(default=4, ge=4)  # Cloud Run's minimum with an L4
    memory_gib: int = Field(default=16, ge=16)
    max_instances: int = Field(default=1, ge=1)


class CostStorage(BaseModel):
    weights_gib: float = Field(default=8.5, ge=0)  # the l4 profile's weights mirrored in GCS
    image_gib: float = Field(default=18.0, ge=0)  # the runtime image (weights baked in) in Artifact Registry
    images_kept: int = Field(default=2, ge=1)  # the registry's cleanup policy keeps this many
    assets_gib: float = Field(default=1.0, ge=0)  # portraits, voices, cached greeting clips
    turn_disk_gib: float = Field(default=10.0, ge=0)
    secrets: int = Field(default=2, ge=0)  # session signing key, TURN secret


class CostSettings(BaseModel):
    prices: CostPrices
    usage: CostUsage = Field(default_factory=CostUsage)
    instance: CostInstance = Field(default_factory=CostInstance)
    storage: CostStorage = Field(default_factory=CostStorage)
    monthly_budget_usd: float = Field(default=100.0, gt=0)  # infra/'s billing budget default
    trials: int = Field(default=24, ge=1)  # simulated months averaged
    seed: int = 0


@dataclass
class _Instance:
    started: float
    ready: float
    off_at: float  # when it scales in unless another session arrives first
    ends: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Month:
    """One simulated month of the runtime."""

    instance_s: float  # billed instance-seconds
    cold_starts: int
    served: int
    refused: int  # arrived while every instance was full (max_instances x max_sessions)


def simulate_month(sessions: int, session_s: float, *, active_hours: float, idle_s: float, cold_s: float,
                   per_instance: int, max_instances: int, rng: random.Random) -> Month:
    """Random arrivals in the active hours of 30 days; each instance takes ``per_instance`` sessions at
    once, starts cold when none is up, and is billed until ``idle_s`` after its last session ends."""
    day = 24 * 3600.0
    arrivals = sorted(rng.randrange(30) * day + rng.random() * active_hours * 3600 for _ in range(sessions))
    up: list[_Instance] = []
    billed, colds, served, refused = 0.0, 0, 0, 0
    for t in arrivals:
        for inst in [i for i in up if i.off_at <= t]:
            billed += inst.off_at - inst.started
            up.remove(inst)
        for inst in up:
            inst.ends = [end for end in inst.ends if end > t]  # sessions still on it
        room = [i for i in up if len(i.ends) < per_instance]
        if room:
            inst = room[0]
        elif len(up) < max_instances:
            inst = _Instance(started=t, ready=t + cold_s, off_at=t + cold_s)
            up.append(inst)
            colds += 1
        else:
            refused += 1
            continue
        end = max(t, inst.ready) + session_s
        inst.ends.append(end)
        inst.off_at = max(inst.off_at, end + idle_s)
        served += 1
    billed += sum(i.off_at - i.started for i in up)
    return Month(billed, colds, served, refused)


@dataclass(frozen=True)
class LineItem:
    name: str
    usd: float
    basis: str  # how it was computed
    sources: tuple[Price, ...] = ()


@dataclass(frozen=True)
class Estimate:
    sessions: int
    minutes: float  # per session, after the cap
    capped: bool  # minutes_per_session was above chat.max_session_minutes
    instance_hours: float
    cold_starts: float
    served: float
    refused: float
    items: tuple[LineItem, ...]
    runtime_usd_per_s: float
    worst_month_usd: float  # max_instances kept awake all month (the budget alert's job)

    @property
    def monthly_usd(self) -> float:
        return sum(i.usd for i in self.items)

    @property
    def fixed_usd(self) -> float:
        return sum(i.usd for i in self.items if i.name in FIXED_ITEMS)

    @property
    def per_session_usd(self) -> float:
        """What each served session adds (everything but the fixed items), averaged."""
        return (self.monthly_usd - self.fixed_usd) / self.served if self.served else 0.0


FIXED_ITEMS = ("TURN VM", "TURN static IP", "TURN disk", "GCS storage", "Artifact Registry", "Secret Manager")


def runtime_rate(cost: CostSettings) -> float:
    p = cost.prices
    return p.gpu_l4_s.usd + cost.instance.vcpu * p.vcpu_s.usd + cost.instance.memory_gib * p.memory_gib_s.usd


def estimate(cost: CostSettings, *, max_session_minutes: float, max_sessions: int,
             sessions: int | None = None, minutes: float | None = None) -> Estimate:
    """The month for ``sessions`` of ``minutes`` each (default: ``cost.usage``), under the chat caps."""
    usage, p, storage = cost.usage, cost.prices, cost.storage
    sessions = usage.sessions_per_month if sessions is None else sessions
    wanted = usage.minutes_per_session if minutes is None else minutes
    minutes = min(wanted, max_session_minutes)  # the runtime ends a session at its cap
    rng = random.Random(cost.seed)
    months = [simulate_month(sessions, minutes * 60, active_hours=usage.active_hours_per_day,
                             idle_s=usage.idle_after_session_s, cold_s=usage.cold_start_s,
                             per_instance=max_sessions, max_instances=cost.instance.max_instances, rng=rng)
              for _ in range(cost.trials)]
    n = len(months)
    instance_s = sum(m.instance_s for m in months) / n
    served = sum(m.served for m in months) / n
    rate = runtime_rate(cost)
    session_s = minutes * 60
    relay_gib = served * session_s * usage.relay_kbps * 1000 / 8 / GIB
    web_vcpu_s = served * session_s * usage.web_vcpu  # upper bound: a request open all session long
    web_gib_s = served * session_s * usage.web_memory_gib
    web_usd = (max(0.0, web_vcpu_s - p.web_free_vcpu_s) * p.web_vcpu_s.usd
               + max(0.0, web_gib_s - p.web_free_gib_s) * p.web_memory_gib_s.usd)
    gcs_gib = storage.weights_gib + storage.assets_gib
    items = (
        LineItem("Cloud Run L4 runtime", instance_s * rate,
                 f"{instance_s / 3600:.1f} instance-h x ${rate * 3600:.3f}/h (L4 + {cost.instance.vcpu} "
                 f"vCPU + {cost.instance.memory_gib} GiB), cold starts and idle windows included",
                 (p.gpu_l4_s, p.vcpu_s, p.memory_gib_s)),
        LineItem("Cloud Run web service", web_usd,
                 f"{web_vcpu_s:,.0f} vCPU-s, {web_gib_s:,.0f} GiB-s before the free tier",
                 (p.web_vcpu_s, p.web_memory_gib_s)),
        LineItem("TURN relay egress", relay_gib * p.egress_gib.usd,
                 f"{relay_gib:.1f} GiB at {usage.relay_kbps:g} kbit/s", (p.egress_gib,)),
        LineItem("TURN VM", p.turn_vm_month.usd, "always on", (p.turn_vm_month,)),
        LineItem("TURN static IP", p.static_ip_hour.usd * HOURS_PER_MONTH, f"{HOURS_PER_MONTH} h",
                 (p.static_ip_hour,)),
        LineItem("TURN disk", storage.turn_disk_gib * p.turn_disk_gib_month.usd,
                 f"{storage.turn_disk_gib:g} GiB", (p.turn_disk_gib_month,)),
        LineItem("GCS storage", gcs_gib * p.gcs_gib_month.usd, f"{gcs_gib:g} GiB (weights mirror + assets)",
                 (p.gcs_gib_month,)),
        LineItem("Artifact Registry", storage.image_gib * storage.images_kept * p.registry_gib_month.usd,
                 f"{storage.images_kept} x {storage.image_gib:g} GiB images", (p.registry_gib_month,)),
        LineItem("Secret Manager", storage.secrets * p.secret_version_month.usd,
                 f"{storage.secrets} active secret versions", (p.secret_version_month,)),
    )
    return Estimate(
        sessions=sessions, minutes=minutes, capped=wanted > minutes, instance_hours=instance_s / 3600,
        cold_starts=sum(m.cold_starts for m in months) / n, served=served,
        refused=sum(m.refused for m in months) / n, items=items, runtime_usd_per_s=rate,
        worst_month_usd=cost.instance.max_instances * SECONDS_PER_MONTH * rate,
    )


def sessions_within_budget(cost: CostSettings, *, max_session_minutes: float, max_sessions: int,
                           minutes: float | None = None, limit: int = 20_000) -> int:
    """The most sessions a month (of ``minutes`` each) whose estimate stays within the budget; 0 if even
    the fixed costs exceed it. The estimate grows with sessions, so a bisection finds it."""
    def fits(n: int) -> bool:
        return estimate(cost, max_session_minutes=max_session_minutes, max_sessions=max_sessions,
                        sessions=n, minutes=minutes).monthly_usd <= cost.monthly_budget_usd

    if not fits(0):
        return 0
    low, high = 0, 64
    while fits(high):  # the estimate is cheap for few sessions: grow the bracket first
        if high >= limit:
            return limit
        low, high = high, min(high * 2, limit)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def format_estimate(e: Estimate, budget_usd: float) -> str:
    lines = [f"{e.sessions} sessions/month x {e.minutes:g} min"
             + (" (capped by chat.max_session_minutes)" if e.capped else "")]
    width = max(len(i.name) for i in e.items)
    for item in e.items:
        lines.append(f"  {item.name:<{width}}  ${item.usd:8.2f}   {item.basis}")
    lines += [
        f"  {'total':<{width}}  ${e.monthly_usd:8.2f}   budget ${budget_usd:g}: "
        + ("within" if e.monthly_usd <= budget_usd else "OVER"),
        f"per session: ${e.per_session_usd:.3f} (runtime, relay, web); fixed: ${e.fixed_usd:.2f}/month",
        f"runtime: {e.instance_hours:.1f} instance-h, {e.cold_starts:.1f} cold starts, "
        f"{e.served:.0f} served, {e.refused:.1f} refused (all instances full)",
        f"worst case (runtime kept awake all month): ${e.worst_month_usd:,.0f}",
        "prices:",
    ]
    seen: dict[str, Price] = {}
    for item in e.items:
        for price in item.sources:
            seen.setdefault(price.unit + price.source, price)
    lines += [f"  ${_usd(p.usd)} {p.unit} ({p.source}, {p.date})" for p in seen.values()]
    return "\n".join(lines)


def format_table(rows: list[Estimate]) -> str:
    """The README's table: one row per sessions-per-month figure."""
    head = ("| sessions / month | minutes each | runtime instance-h | cold starts | runtime | relay + web | "
            "fixed (TURN VM, IP, storage) | month | all-in per session |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in rows:
        runtime = e.items[0].usd
        variable = e.monthly_usd - e.fixed_usd - runtime
        lines.append(f"| {e.sessions} | {e.minutes:g} | {e.instance_hours:.1f} | {e.cold_starts:.0f} | "
                     f"${runtime:.2f} | ${variable:.2f} | ${e.fixed_usd:.2f} | **${e.monthly_usd:.2f}** | "
                     f"${e.monthly_usd / e.sessions if e.sessions else 0:.2f} |")
    return "\n".join(lines)


def _usd(value: float) -> str:
    """A price as written on a price list (0.0001867, not 1.867e-04)."""
    return f"{value:.10f}".rstrip("0").rstrip(".") if value else "0"
