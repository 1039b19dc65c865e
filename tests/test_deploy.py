"""The shipped deployment files use flags the daemon has, and agree with each other."""

from __future__ import annotations

import re
import shlex

import yaml
from conftest import REPO

from asr_stream.cli import build_serve_parser

DEPLOY = REPO / "deploy"


def _serve_args(argv: list[str]):
    return build_serve_parser().parse_args(argv)  # exits 2 on an unknown flag


def test_kubernetes_probes_and_grace_period_fit_the_daemon():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "asr-stream.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    entry = re.search(r"ENTRYPOINT \[(.*)\]", (DEPLOY / "Dockerfile").read_text()).group(1)
    argv = [a.strip().strip('"') for a in entry.split(",")][2:] + container["args"]
    args = _serve_args(argv)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == args.port
    assert pod["terminationGracePeriodSeconds"] > args.drain_seconds
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_systemd_unit_starts_the_daemon_with_valid_flags():
    unit = (DEPLOY / "systemd" / "asr-stream@.service").read_text()
    assert "Type=notify" in unit
    command = re.search(r"ExecStart=(.*?)(?<!\\)\n", unit, re.S).group(1).replace("\\\n", " ")
    argv = shlex.split(command.replace("%i", "8765").replace("%H", "host").replace("$ASR_STREAM_ARGS", ""))
    assert argv[1] == "serve"
    args = _serve_args(argv[2:])
    stop = float(re.search(r"TimeoutStopSec=(\d+)", unit).group(1))
    assert args.port == 8765 and stop > args.drain_seconds

