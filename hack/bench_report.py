"""Writes BENCHMARKS.md and docs/bench.svg from the scale benchmark's JSON (see hack/bench.sh)."""

import datetime
import json
import os
import platform
import sys

results = json.load(open(sys.argv[1]))
sizes = sys.argv[2] if len(sys.argv) > 2 else ""
# The periodic snapshot and the readiness probe run whatever the number of users created: counted apart.
PERIODIC = ("/user/list", "/key/list", "/health/liveliness")
for r in results:
    if "creation_litellm_calls" in r:
        calls = r["creation_litellm_calls"]
        r["creation_path_calls_per_user"] = sum(v for k, v in calls.items() if k not in PERIODIC) / r["users"]


def machine():
    cpu = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    return f"{os.cpu_count()} cores ({cpu}), {mem_kib / 1024 / 1024:.0f} GiB, {platform.system()} {platform.release()}"


def at(users, check):
    """A check that applies only at one size."""
    return lambda value, size: check(value) if size == users else None


def every(check):
    return lambda value, size: check(value)


# The targets of the scale issue (#10).
TARGETS = [
    ("resync_seconds", "the operator's resync interval in the run, s", "", None),
    ("calibration_ms", "a fixed CPU-bound workload on this machine before the run, ms (the machine's speed)", "", None),
    ("all_ready_seconds", "seconds from apply to all Ready", "< 60 at 10,000; < 900 at 100,000",
     lambda v, n: v < 60 if n == 10000 else v < 900 if n == 100000 else None),
    ("peak_rss_mib", "operator peak RSS, MiB", "< 48 at 10,000; < 256 at 100,000",
     lambda v, n: v < 48 if n == 10000 else v < 256 if n == 100000 else None),
    ("creation_litellm_calls_per_user", "LiteLLM calls per user, creation (all calls in the window)", "≤ 2",
     every(lambda v: v <= 2.0)),
    ("creation_path_calls_per_user", "… without the periodic snapshot and probe (/user/list, /key/list, health)",
     "≤ 2", every(lambda v: v <= 2.0)),
    ("creation_k8s_writes_per_user_without_events", "Kubernetes writes per user, creation (with Leases)", "", None),
    ("creation_k8s_writes_per_user", "… the same with Events counted", "", None),
    ("first_resync_k8s_writes", "Kubernetes writes, first resync after creation", "", None),
    ("steady_k8s_writes", "Kubernetes writes, one resync period in steady state", "0", every(lambda v: v == 0)),
    ("steady_operator_k8s_gets_and_writes",
     "Kubernetes reads (GET) and writes by the operator, one resync period in steady state (its own count)", "0",
     every(lambda v: v == 0)),
    ("steady_k8s_reads", "… reads (GET) of litellmusers, secrets and leases by every client (the API server's count)",
     "", None),
    ("steady_litellm_calls_per_user", "LiteLLM calls per user, one resync period", "≤ 0.011",
     lambda v, n: v <= 0.011 if n >= 10000 else None),
    ("restart_k8s_writes", "restart: Kubernetes writes in the first 5 minutes", "0", every(lambda v: v == 0)),
    ("restart_operator_k8s_gets_and_writes",
     "restart: Kubernetes reads (GET) and writes by the operator in the first 5 minutes (its own count)", "0",
     every(lambda v: v == 0)),
    ("restart_k8s_reads", "… reads (GET) by every client (the API server's count)", "", None),
    ("restart_litellm_calls_per_100_users", "restart: LiteLLM calls per 100 users in the first 5 minutes", "≤ 1.1",
     lambda v, n: v <= 1.1 if n >= 10000 else None),
    ("restart_peak_rss_mib", "restart: operator peak RSS, MiB", "", None),
    ("metric_series_per_user", "metric series per user (per-user metrics on)", "", None),
    ("single_apply_ready_ms_p50", "single apply → Ready p50, ms", "", None),
    ("single_apply_ready_ms_p99", "single apply → Ready p99, ms", "", None),
    ("cpu_seconds_creation", "operator CPU seconds, creation", "", None),
    ("machine_cpu_busy_creation", "machine CPU busy during creation (all processes), %", "", None),
    ("control_plane_cpu_seconds_creation", "etcd + kube-apiserver CPU seconds, creation", "", None),
    ("bench_cpu_seconds_creation", "benchmark + emulator CPU seconds, creation", "", None),
    ("cpu_seconds_steady_period", "operator CPU seconds, one steady resync period", "", None),
]


def verdict(check, value, users):
    if check is None or value is None:
        return ""
    met = check(value, users)
    return "" if met is None else "met" if met else "missed"


# Per-user call counts are compared with a whole number: three decimals would print 2.0002 as a "missed" 2.000.
FOUR_DECIMALS = {"creation_litellm_calls_per_user", "creation_path_calls_per_user"}


def fmt(v, key=""):
    if isinstance(v, float):
        v += 0.0  # an empty sum is -0.0
    if isinstance(v, float) and v < 10:
        return f"{v:,.4f}" if key in FOUR_DECIMALS else f"{v:,.3f}"
    return f"{v:,.1f}" if isinstance(v, float) else str(v)


lines = [
    "# Benchmarks",
    "",
    "The real operator binary (the image's static musl release build) against a real kube-apiserver (v1.35.4,",
    "`hack/kube-testbed.sh`)",
    "and the in-process LiteLLM emulator (newer generation), all on this one machine. The resync period is",
    "60 s unless the table says otherwise.",
    "Kubernetes writes are counted from the API server's own `apiserver_request_total` (POST/PUT/PATCH/DELETE",
    "on litellmusers, secrets, leases and events, minus the benchmark's own creates); LiteLLM calls from the",
    "emulator's counters. Steady state is the second resync period after all users are Ready: the first one",
    "fills in `budgetResetAt`, which LiteLLM computes and does not return from `/user/new`. The restart is a",
    "new operator process at the default resync interval (5 minutes), watched for its first 5 minutes from",
    "process start.",
    "",
    # Figures merged from several runs name each run's command (BENCH_COMMANDS, one per line).
    *(f"- Command: `{c}`" for c in os.environ.get("BENCH_COMMANDS", f'BENCH_SIZES="{sizes}" hack/bench.sh').splitlines()),
    # Regenerating the report elsewhere or later must not relabel the runs: BENCH_MACHINE and BENCH_DATE say
    # where and when the figures were taken.
    f"- Machine: {os.environ.get('BENCH_MACHINE') or machine()}",
    f"- Date: {os.environ.get('BENCH_DATE') or datetime.date.today().isoformat()}",
    "",
    "| figure | target | " + " | ".join(f"{r['users']:,} users" for r in results) + " |",
    "|---|---|" + "---|" * len(results),
]
for key, label, target, check in TARGETS:
    cells = []
    for r in results:
        value = r.get(key)
        v = verdict(check, value, r["users"])
        cells.append(("n/a" if value is None else fmt(value, key)) + (f" ({v})" if v else ""))
    lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
lines += ["", "Per endpoint (creation; one steady resync period; the restart's first 5 minutes):", ""]
for r in results:
    create = ", ".join(f"{k} {int(v)}" for k, v in r.get("creation_litellm_calls", {}).items() if v) or "n/a"
    steady = ", ".join(f"{k} {int(v)}" for k, v in r.get("steady_litellm_calls", {}).items() if v) or "n/a"
    restart = ", ".join(f"{k} {int(v)}" for k, v in r.get("restart_litellm_calls", {}).items() if v) or "n/a"
    writes = ", ".join(f"{k} {int(v)}" for k, v in r.get("creation_k8s_writes", {}).items() if v) or "n/a"
    reads = "; ".join(
        f"{when} " + (", ".join(f"{k} {int(v)}" for k, v in r[key].items() if v) or "none")
        for when, key in (("steady", "steady_operator_k8s_requests"), ("restart", "restart_operator_k8s_requests"))
        if key in r
    )
    lines.append(
        f"- {r['users']:,} users: LiteLLM {create}; steady {steady}; restart {restart}; "
        f"Kubernetes writes at creation {writes}" + (f"; the operator's Kubernetes requests {reads}." if reads else ".")
    )
if os.path.exists("docs/bench-results-real.json"):
    # Written by `BENCH_LITELLM_VERSION=… hack/bench.sh`: the same figures against the test bed's real proxy.
    real = json.load(open("docs/bench-results-real.json"))
    lines += ["", "## On the real LiteLLM proxy", "",
              "The same benchmark against the test bed's real LiteLLM proxy and PostgreSQL (`../shared/testbed/litellm`),",
              "on the same machine; calls counted by the operator's own metrics.", "",
              "| figure | " + " | ".join(f"{r['users']:,} users, LiteLLM {r.get('litellm_version', '?')}" for r in real) + " |",
              "|---|" + "---|" * len(real)]
    for r in real:
        calls = r.get("creation_litellm_calls", {})
        r["creation_path_calls_per_user"] = sum(v for k, v in calls.items() if k not in PERIODIC) / r["users"]
    for key, label, _target, _check in TARGETS:
        if any(key in r for r in real):
            lines.append(f"| {label} | " + " | ".join(fmt(r[key]) if key in r else "n/a" for r in real) + " |")
    for r in real:
        create = ", ".join(f"{k} {int(v)}" for k, v in r.get("creation_litellm_calls", {}).items() if v)
        restart = ", ".join(f"{k} {int(v)}" for k, v in r.get("restart_litellm_calls", {}).items() if v) or "none"
        lines.append("")
        lines.append(f"- {r['users']:,} users: LiteLLM at creation {create}; restart {restart}.")
lines += ["", "![time to Ready and peak RSS by number of users](docs/bench.svg)", ""]
if os.path.exists("docs/bench-notes.md"):
    lines += [open("docs/bench-notes.md").read().rstrip("\n"), ""]

# A small SVG, no plotting library needed: time to all Ready and peak RSS against users, both axes logarithmic.
import math

w, h, pad = 720, 360, 60
xs = [r["users"] for r in results]
series = [("all_ready_seconds", "seconds to all Ready", "#4c78a8", "s"), ("peak_rss_mib", "peak RSS, MiB", "#e45756", "MiB")]
values = [r[k] for r in results for k, *_ in series if r.get(k)]
lo_x, hi_x = math.log10(min(xs)), math.log10(max(xs))
lo_y, hi_y = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))


def px(users):
    return pad + (w - 2 * pad - 60) * ((math.log10(users) - lo_x) / ((hi_x - lo_x) or 1))


def py(value):
    return h - pad - (h - 2 * pad) * ((math.log10(value) - lo_y) / ((hi_y - lo_y) or 1))


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
       f'<rect width="{w}" height="{h}" fill="white"/>',
       f'<text x="{pad}" y="20">seconds from apply to all Ready (blue) and peak RSS in MiB (red), by users; log scales</text>']
for decade in range(lo_y, hi_y + 1):
    y = py(10 ** decade)
    svg.append(f'<line x1="{pad}" y1="{y:.0f}" x2="{w - pad}" y2="{y:.0f}" stroke="#ddd"/>')
    svg.append(f'<text x="{pad - 8}" y="{y + 4:.0f}" text-anchor="end">{10 ** decade:g}</text>')
for users in xs:
    svg.append(f'<text x="{px(users):.0f}" y="{h - pad + 18}" text-anchor="middle">{users:,}</text>')
for key, _label, colour, unit in series:
    points = [(px(r["users"]), py(r[key]), r[key]) for r in results if r.get(key)]
    svg.append(f'<polyline points="{" ".join(f"{x:.0f},{y:.0f}" for x, y, _ in points)}" fill="none" stroke="{colour}"/>')
    for x, y, v in points:
        svg.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="4" fill="{colour}"/>')
        svg.append(f'<text x="{x + 6:.0f}" y="{y - 6:.0f}" fill="{colour}">{v:,.0f} {unit}</text>')
svg.append("</svg>")
os.makedirs("docs", exist_ok=True)
open("docs/bench.svg", "w").write("\n".join(svg) + "\n")
open("BENCHMARKS.md", "w").write("\n".join(lines) + "\n")
json.dump(results, open("docs/bench-results.json", "w"), indent=2)
print("\n".join(lines))
