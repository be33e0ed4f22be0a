#!/usr/bin/env python3
"""Runs the container of a rendered Deployment with podman the way a kubelet would run its pod: the pod's and
the container's security settings, env, args, Secret volumes, service account and probes, read from the
Deployment itself (so the image is tested with exactly the chart's settings, not a copy of them).

  pod-run.py flags DEPLOYMENT.json
      podman flags for the security settings and limits, one per line (the e2e suite's container mode uses them)
  pod-run.py run DEPLOYMENT.json --name NAME --image IMAGE --state DIR --api-server URL
                 --serviceaccount DIR --secret SECRET=DIR... [--listen HOST:PORT]
      start the container detached, on the host network, with in-cluster configuration as a kubelet gives it
  pod-run.py check NAME
      what the kernel says the container's process runs with (user, groups, capabilities, no_new_privs, seccomp,
      read-only root); fails unless it matches the settings
  pod-run.py probe DEPLOYMENT.json --deadline SECONDS
      the chart's liveness and readiness probes, as a kubelet judges them, until ready

Any setting this script does not know how to reproduce is an error, not silently dropped.
Stdlib only; the Deployment comes as JSON (kubectl create --dry-run=client -o json).
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

KNOWN_POD_SECURITY = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile", "supplementalGroups"}
KNOWN_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "privileged",
    "capabilities",
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "seccompProfile",
}


def fail(message):
    print(f"[pod-run] {message}", file=sys.stderr)
    sys.exit(1)


def load(path):
    with open(path) as f:
        deployment = json.load(f)
    if deployment.get("kind") != "Deployment":
        fail(f"{path}: not a Deployment")
    pod = deployment["spec"]["template"]["spec"]
    containers = pod["containers"]
    if len(containers) != 1 or pod.get("initContainers"):
        fail("only a pod with exactly one container is supported")
    return deployment, pod, containers[0]


def security(pod, container):
    """The effective settings: the container's override the pod's, as in Kubernetes."""
    pod_sc = pod.get("securityContext", {})
    c_sc = container.get("securityContext", {})
    for name, sc, known in (("pod", pod_sc, KNOWN_POD_SECURITY), ("container", c_sc, KNOWN_CONTAINER_SECURITY)):
        unknown = set(sc) - known
        if unknown:
            fail(f"{name} securityContext has settings this script cannot reproduce: {sorted(unknown)}")
    merged = {k: pod_sc[k] for k in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile") if k in pod_sc}
    merged.update({k: v for k, v in c_sc.items()})
    merged["fsGroup"] = pod_sc.get("fsGroup")
    merged["supplementalGroups"] = pod_sc.get("supplementalGroups", [])
    if "runAsUser" not in merged:
        fail("runAsUser is not set: the image's user would apply, which this check does not model")
    if merged.get("runAsNonRoot") and merged["runAsUser"] == 0:
        fail("runAsNonRoot with runAsUser 0: the kubelet would refuse to start the container")
    return merged


def flags(pod, container):
    sc = security(pod, container)
    out = [f"--user={sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
    for group in ([sc["fsGroup"]] if sc["fsGroup"] is not None else []) + list(sc["supplementalGroups"]):
        out.append(f"--group-add={group}")
    seccomp = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        out.append("--security-opt=seccomp=unconfined")
    elif seccomp != "RuntimeDefault":
        fail(f"seccompProfile {seccomp} is not reproduced here")
    # RuntimeDefault is podman's default profile: nothing to add.
    if sc.get("privileged"):
        fail("privileged containers are not reproduced here")
    if sc.get("allowPrivilegeEscalation") is False:
        out.append("--security-opt=no-new-privileges")
    if sc.get("readOnlyRootFilesystem"):
        # A pod has no tmpfs on /tmp unless it mounts one: podman's default extra tmpfs mounts are turned off.
        out += ["--read-only", "--read-only-tmpfs=false"]
    caps = sc.get("capabilities") or {}
    unknown = set(caps) - {"drop", "add"}
    if unknown:
        fail(f"capabilities has {sorted(unknown)}")
    out += [f"--cap-drop={c}" for c in caps.get("drop", [])]
    out += [f"--cap-add={c}" for c in caps.get("add", [])]
    limits = (container.get("resources") or {}).get("limits", {})
    for name, value in limits.items():
        if name == "memory":
            out.append(f"--memory={memory_bytes(value)}")
        elif name == "cpu":
            out.append(f"--cpus={cpu_cores(value)}")
        else:
            fail(f"resource limit {name} is not reproduced here")
    return out


def memory_bytes(quantity):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return int(float(quantity[: -len(unit)]) * factor)
    return int(quantity)


def cpu_cores(quantity):
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def install(src, dst, mode, uid=0, gid=0):
    shutil.copyfile(src, dst)
    os.chown(dst, uid, gid)
    os.chmod(dst, mode)


def run(args):
    deployment, pod, container = load(args.deployment)
    sc = security(pod, container)
    namespace = deployment["metadata"].get("namespace", "default")
    state = os.path.abspath(args.state)
    os.makedirs(state, exist_ok=True)
    cmd = ["podman", "run", "--detach", "--name", args.name, "--network=host", "--pull=never"]
    cmd += flags(pod, container)
    gid = sc["fsGroup"] if sc["fsGroup"] is not None else 0

    # Volumes: each Secret volume from a local directory standing in for the Secret, files owned by fsGroup.
    secrets = dict(s.split("=", 1) for s in args.secret)
    volumes = {}
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if kinds != {"secret"}:
            fail(f"volume {volume['name']} is {sorted(kinds)}: only Secret volumes are reproduced")
        source = secrets.get(volume["secret"]["secretName"])
        if source is None:
            fail(f"volume {volume['name']} needs --secret {volume['secret']['secretName']}=DIR")
        target = os.path.join(state, "volumes", volume["name"])
        os.makedirs(target, exist_ok=True)
        items = volume["secret"].get("items") or [{"key": k, "path": k} for k in os.listdir(source)]
        for item in items:
            install(os.path.join(source, item["key"]), os.path.join(target, item["path"]), 0o440, 0, gid)
        volumes[volume["name"]] = target
    for mount in container.get("volumeMounts", []):
        if not mount.get("readOnly"):
            fail(f"volume mount {mount['name']} is writable: not reproduced")
        cmd += ["-v", f"{volumes[mount['name']]}:{mount['mountPath']}:ro"]

    # The service account, as the kubelet projects it: token, CA and namespace, and the API server's address.
    sa = os.path.join(state, "serviceaccount")
    os.makedirs(sa, exist_ok=True)
    install(os.path.join(args.serviceaccount, "token"), os.path.join(sa, "token"), 0o600, sc["runAsUser"], gid)
    install(os.path.join(args.serviceaccount, "ca.crt"), os.path.join(sa, "ca.crt"), 0o644)
    with open(os.path.join(sa, "namespace"), "w") as f:
        f.write(namespace)
    cmd += ["-v", f"{sa}:/var/run/secrets/kubernetes.io/serviceaccount:ro"]
    host, port = args.api_server.removeprefix("https://").rsplit(":", 1)
    cmd += ["--env", f"KUBERNETES_SERVICE_HOST={host.strip('[]')}", "--env", f"KUBERNETES_SERVICE_PORT={port}"]

    for var in container.get("env", []):
        if "value" in var:
            value = var["value"]
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            value = args.name
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            value = namespace
        else:
            fail(f"env {var['name']}: only values and metadata.name/namespace field refs are reproduced")
        if var["name"] == "LISTEN_ADDRESS" and args.listen:
            # On the host network the pod's own network namespace is missing: keep the port on loopback.
            value = args.listen
        cmd += ["--env", f"{var['name']}={value}"]
    if container.get("command"):
        if len(container["command"]) != 1:
            fail("a command with arguments is not reproduced")
        cmd += ["--entrypoint", container["command"][0]]
    cmd.append(args.image)
    cmd += container.get("args", [])
    subprocess.run(["podman", "rm", "--force", "--ignore", args.name], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def check(args):
    pid = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Pid}}", args.name], check=True, capture_output=True, text=True
    ).stdout.strip()
    if pid in ("", "0"):
        fail(f"container {args.name} is not running")
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    with open(f"/proc/{pid}/mountinfo") as f:
        root = [line.split() for line in f if line.split()[4] == "/"]
    facts = {
        "uids": status["Uid"].split(),
        "gids": status["Gid"].split(),
        "groups": status.get("Groups", "").split(),
        "CapEff": status["CapEff"],
        "CapPrm": status["CapPrm"],
        "CapBnd": status["CapBnd"],
        "NoNewPrivs": status["NoNewPrivs"],
        "Seccomp": status["Seccomp"],
        "root mount": root[-1][5] if root else "?",
    }
    want_uid, want_gid = (args.user.split(":") + [None])[:2]
    problems = []
    if set(facts["uids"]) != {want_uid}:
        problems.append(f"uid {facts['uids']}, want {want_uid}")
    if want_gid and set(facts["gids"]) != {want_gid}:
        problems.append(f"gid {facts['gids']}, want {want_gid}")
    for cap in ("CapEff", "CapPrm", "CapBnd"):
        if int(facts[cap], 16) != 0:
            problems.append(f"{cap} {facts[cap]}: capabilities left")
    if facts["NoNewPrivs"] != "1":
        problems.append("no_new_privs is off")
    if facts["Seccomp"] != "2":
        problems.append(f"seccomp mode {facts['Seccomp']}, want 2 (filter)")
    if "ro" not in facts["root mount"].split(","):
        problems.append(f"root filesystem mounted {facts['root mount']}")
    if problems:
        fail("container settings differ from the chart's: " + "; ".join(problems))
    print(f"[pod-run] {args.name}: " + ", ".join(f"{k} {v}" for k, v in facts.items()), file=sys.stderr)


def probe_once(spec, port_by_name, host):
    get = spec.get("httpGet")
    if get is None or set(spec) - {"httpGet", "periodSeconds", "timeoutSeconds", "failureThreshold",
                                   "successThreshold", "initialDelaySeconds", "terminationGracePeriodSeconds"}:
        fail(f"probe {spec} is not an httpGet probe this script reproduces")
    port = port_by_name.get(get["port"], get["port"])
    url = f"{get.get('scheme', 'HTTP').lower()}://{host}:{port}{get['path']}"
    try:
        with urllib.request.urlopen(url, timeout=spec.get("timeoutSeconds", 1)) as response:
            code = response.status
    except urllib.error.HTTPError as err:
        code = err.code
    # As the kubelet: no connection, a reset or a malformed answer is a failed probe, with the reason kept for the
    # message.
    except (OSError, http.client.HTTPException) as err:
        return False, f"no answer ({err!r})"
    # The kubelet counts 200-399 as success.
    return 200 <= code < 400, str(code)


def running(name):
    state = subprocess.run(["podman", "inspect", "--format", "{{.State.Running}}", name], capture_output=True, text=True)
    return state.stdout.strip() == "true"


def probe(args):
    _, _, container = load(args.deployment)
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    if args.port:
        ports = {name: args.port for name in ports}
    liveness, readiness = container.get("livenessProbe"), container.get("readinessProbe")
    if not liveness or not readiness:
        fail("the container has no liveness or readiness probe")
    deadline = time.monotonic() + args.deadline
    live_failures, last = 0, ""
    # Polled more often than periodSeconds (the test need not wait 10 s), judged the kubelet's way: a restart
    # after failureThreshold liveness failures in a row; ready after successThreshold readiness successes.
    while time.monotonic() < deadline:
        if args.name and not running(args.name):
            fail(f"container {args.name} exited")
        live, live_code = probe_once(liveness, ports, args.host)
        live_failures = 0 if live else live_failures + 1
        if live_failures >= liveness.get("failureThreshold", 3) and args.started:
            fail(f"liveness probe failed {live_failures} times in a row ({live_code}): the kubelet would restart it")
        ready, last = probe_once(readiness, ports, args.host)
        if ready and live:
            print(f"[pod-run] liveness {liveness['httpGet']['path']} {live_code}, "
                  f"readiness {readiness['httpGet']['path']} {last}", file=sys.stderr)
            return
        args.started = args.started or live
        time.sleep(0.5)
    fail(f"not ready within {args.deadline} s (last readiness answer {last})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("flags")
    p.add_argument("deployment")
    p = sub.add_parser("run")
    p.add_argument("deployment")
    p.add_argument("--name", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--api-server", required=True)
    p.add_argument("--serviceaccount", required=True)
    p.add_argument("--secret", action="append", default=[])
    p.add_argument("--listen")
    p = sub.add_parser("check")
    p.add_argument("name")
    p.add_argument("--user", required=True, help="UID:GID the process must run as")
    p = sub.add_parser("probe")
    p.add_argument("deployment")
    p.add_argument("--deadline", type=float, default=90)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="the port the container listens on, if not the Deployment's")
    p.add_argument("--name", help="the container: fail at once if it exits")
    args = parser.parse_args()
    if args.command == "flags":
        _, pod, container = load(args.deployment)
        print("\n".join(flags(pod, container)))
    elif args.command == "run":
        run(args)
    elif args.command == "check":
        check(args)
    else:
        args.started = False
        probe(args)


if __name__ == "__main__":
    main()
