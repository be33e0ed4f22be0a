#!/usr/bin/env python3
"""A real Prometheus scraping a running operator: every query of the chart's Grafana dashboard must return
data, and the chart's alerting rules must load, evaluate without error and fire on real metrics.

  prometheus-check.py --target 127.0.0.1:PORT --namespace NS --listen 127.0.0.1:PORT --state DIR --rules FILE

The operator at --target must watch --namespace (hack/e2e.sh runs the container image there). This script
starts Prometheus (Debian's package) on loopback, creates and updates LiteLLMUsers in the namespace with
kubectl (one refused by LiteLLM, one with a zero budget), then polls Prometheus's HTTP API, each condition with
a deadline. The scrape job mirrors the chart's ServiceMonitor: job <release>-metrics, the operator's namespace
as a target label, honor_labels. Stdlib only.
"""

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, "charts/litellm-operator/dashboards/litellm-operator.json")
JOB = "litellm-operator-metrics"
OPERATOR_NAMESPACE = "litellm-system"
DEADLINE = 120


def log(message):
    print(f"[prometheus-check] {message}", file=sys.stderr, flush=True)


class NotYet:
    """A check's answer for "not yet" that says what it saw instead, for the timeout message."""

    def __init__(self, seen):
        self.seen = seen

    def __bool__(self):
        return False

    def __str__(self):
        return str(self.seen)


def wait_for(what, check, deadline=DEADLINE):
    """Polls check() until it returns something truthy; fails after the deadline with the last answer. A request
    that fails on the way (no connection, a reset, an answer cut short) is "not yet", as a falsy answer is."""
    end, last = time.monotonic() + deadline, None
    while time.monotonic() < end:
        try:
            last = check()
        except (OSError, http.client.HTTPException, json.JSONDecodeError) as err:
            last = err
        else:
            if last and not isinstance(last, Exception):
                return last
        time.sleep(0.5)
    sys.exit(f"[prometheus-check] timed out after {deadline} s waiting for {what} (last: {last})")


def dashboard_queries():
    """Every target expression of the dashboard, with Grafana's template variables substituted."""
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    variables = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "datasource":
            continue  # chooses the Prometheus, not part of any query
        current = var.get("current", {}).get("value") or ".*"
        variables[var["name"]] = current if isinstance(current, str) else "|".join(current)
    queries = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels", [])  # rows
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            expr = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], expr)
            queries.append((panel.get("title", "?"), expr))
    if not queries:
        sys.exit("[prometheus-check] the dashboard has no queries")
    return queries


class Prometheus:
    def __init__(self, listen):
        self.base = f"http://{listen}"

    def get(self, path, **params):
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise OSError(f"{path}: {body}")
        return body["data"]

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)["result"]


def kubectl(*args, stdin=None):
    out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"[prometheus-check] kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def apply_user(namespace, name, spec):
    manifest = {"apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMUser",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    kubectl("apply", "--server-side", "--field-manager=prometheus-check", "-f", "-", stdin=json.dumps(manifest))


def ready_reason(namespace, name):
    out = subprocess.run(["kubectl", "get", "litellmuser", name, "-n", namespace, "-o", "json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        # An OSError, so that wait_for takes it for "not yet" and reports it.
        raise OSError(f"kubectl get litellmuser {name}: {out.stderr.strip()}")
    user = json.loads(out.stdout)
    for condition in user.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready" and condition.get("observedGeneration") == user["metadata"]["generation"]:
            return condition["reason"]
    return None


def has_reason(namespace, name, wanted):
    """A check for wait_for: the resource's Ready reason at its generation is `wanted`."""
    def check():
        reason = ready_reason(namespace, name)
        return True if reason == wanted else NotYet(f"Ready reason {reason}")
    return check


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--rules", required=True)
    args = parser.parse_args()
    state = os.path.abspath(args.state)
    os.makedirs(state, exist_ok=True)
    config = os.path.join(state, "prometheus.yml")
    with open(config, "w") as f:
        json.dump({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [os.path.abspath(args.rules)],
            "scrape_configs": [{
                "job_name": JOB,
                "honor_labels": True,
                "static_configs": [{"targets": [args.target], "labels": {"namespace": OPERATOR_NAMESPACE}}],
            }],
        }, f, indent=2)
    with open(os.path.join(state, "prometheus.log"), "w") as prom_log:
        server = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={state}/data",
             f"--web.listen-address={args.listen}", "--storage.tsdb.retention.time=1h"],
            stdout=prom_log, stderr=prom_log, start_new_session=True)
    try:
        check(args, Prometheus(args.listen), server)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def check(args, prom, server):
    def ready():
        if server.poll() is not None:
            sys.exit(f"[prometheus-check] Prometheus exited; see {args.state}/prometheus.log")
        with urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2) as response:
            return response.status == 200
    wait_for("Prometheus to be ready", ready)
    version = wait_for("Prometheus's build info", lambda: prom.get("/api/v1/status/buildinfo"))["version"]
    log(f"Prometheus {version} on {args.listen}, scraping {args.target}")

    def target_up():
        targets = prom.get("/api/v1/targets")["activeTargets"]
        up = [t for t in targets if t["health"] == "up"]
        return up or NotYet([(t.get("scrapeUrl"), t["health"], t.get("lastError")) for t in targets])
    wait_for("the operator's target to be up", target_up)

    # Users created and updated; one refused by LiteLLM (a team that does not exist), one with no budget.
    ns = args.namespace
    apply_user(ns, "prom-alice", {"maxBudget": 10, "budgetDuration": "30d"})
    apply_user(ns, "prom-bob", {"maxBudget": 5, "models": ["gpt-4o"]})
    apply_user(ns, "prom-zero", {"maxBudget": 0})
    # A team under the namespace's own prefix (the default policy allows those) that the proxy does not have.
    apply_user(ns, "prom-rejected", {"teams": [f"{ns}.no-such-team"]})
    for name in ("prom-alice", "prom-bob", "prom-zero"):
        wait_for(f"{name} to be Ready", has_reason(ns, name, "Synced"))
    apply_user(ns, "prom-alice", {"maxBudget": 20, "budgetDuration": "30d", "userAlias": "Alice"})
    apply_user(ns, "prom-bob", {"maxBudget": 7.5, "models": ["gpt-4o", "claude"]})
    for name in ("prom-alice", "prom-bob"):
        wait_for(f"{name}'s update to be Ready", has_reason(ns, name, "Synced"))
    wait_for("prom-rejected to be refused", has_reason(ns, "prom-rejected", "LiteLLMRejected"))

    # The per-user series keep the user's namespace (honor_labels, as the ServiceMonitor sets it), and show the
    # updated budget.
    def budget_updated():
        series = prom.query(f'litellm_operator_user_max_budget_usd{{namespace="{ns}", name="prom-alice"}}')
        return [r for r in series if float(r["value"][1]) == 20] or NotYet(series)
    budget = wait_for("prom-alice's updated budget in Prometheus", budget_updated)
    log(f"prom-alice's budget as Prometheus has it: {budget[0]['metric']} = {budget[0]['value'][1]}")

    for title, expr in dashboard_queries():
        result = wait_for(f"dashboard panel '{title}' to have data: {expr}", lambda expr=expr: prom.query(expr))
        log(f"panel '{title}': {len(result)} series, e.g. {result[0]['metric']} = {result[0]['value'][1]}")

    # Every rule loads and evaluates; alerts that should be under way are, and the operator is not 'down'.
    with open(args.rules) as f:
        expected = len(re.findall(r"(?m)^\s*- alert:", f.read()))

    def rules_ok():
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        if bad:
            raise OSError(f"rules failing: {bad}")
        evaluated = sum(r.get("lastEvaluation", "").startswith("20") for r in rules)
        if len(rules) == expected and evaluated == expected:
            return True
        return NotYet(f"{len(rules)} rules loaded, {evaluated} evaluated")
    wait_for(f"all {expected} rules to be loaded and evaluated", rules_ok)

    def alerts():
        return {(a["labels"]["alertname"], a["labels"].get("reason") or a["labels"].get("name")): a["state"]
                for a in prom.get("/api/v1/alerts")["alerts"]}
    # Nothing here makes a reconcile end in an error (a Kubernetes write or a proxy deletion failing), or the
    # proxy fail: those alerts must stay quiet, and are exercised by the promtool tests instead.
    wanted = {("LiteLLMUsersNotReady", "LiteLLMRejected"), ("LiteLLMUserBudgetExceeded", "prom-zero")}
    seen = []

    def wanted_active():
        seen[:] = [alerts()]
        return seen[0] if wanted <= set(seen[0]) else NotYet(f"active: {seen[0]}")
    wait_for(f"alerts {sorted(map(str, wanted))} to be pending or firing", wanted_active)
    active = seen[0]
    unexpected = {k: v for k, v in active.items() if k not in wanted}
    if unexpected:
        sys.exit(f"[prometheus-check] alerts active that should not be: {unexpected}")
    log(f"alerts under way: {sorted(f'{k[0]}({k[1]}): {v}' for k, v in active.items())}")

    for name in ("prom-alice", "prom-bob", "prom-zero", "prom-rejected"):
        kubectl("delete", "litellmuser", name, "-n", ns, "--wait=true", "--timeout=60s")


if __name__ == "__main__":
    main()
