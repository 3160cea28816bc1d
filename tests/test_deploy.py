"""The deployment kit in deploy/: the systemd unit passes `systemd-analyze verify` and runs the
real command line, the alert rules pass `promtool check rules` and their own `promtool test
rules`, and every metric name the rules and the Grafana dashboard use is in /metrics of a
`--simulate` run."""

from __future__ import annotations

import asyncio
import configparser
import dataclasses
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from pumpwatch import config as config_mod
from pumpwatch.cli import build_parser
from pumpwatch.daemon import SimScenario, run
from pumpwatch.sink.postgres import metrics_lines

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "pumpwatch.service"
RULES = DEPLOY / "prometheus" / "pumpwatch-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "pumpwatch-dashboard.json"
#: Series Prometheus makes itself for every scrape target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("PUMPWATCH_CI") or os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: install Debian's {package} (.ci/run does)")
        pytest.skip(f"{tool} is not installed (apt-get install {package})")
    return path


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(UNIT)
    return unit


def test_unit_passes_systemd_analyze_verify(tmp_path):
    _need("systemd-analyze", "systemd")
    # The unit as shipped, its ExecStart pointed at an executable that exists here (verify
    # refuses a missing binary; /opt/pumpwatch is where the README installs it).
    fake = tmp_path / "pumpwatch"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    text = UNIT.read_text()
    assert "/opt/pumpwatch/venv/bin/pumpwatch " in text
    (tmp_path / "pumpwatch.service").write_text(text.replace("/opt/pumpwatch/venv/bin/pumpwatch ", f"{fake} "))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "pumpwatch.service")], capture_output=True, text=True
    )
    # verify only warns (exit 0) on an unknown key or a bad value: any output is a failure.
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr


def test_unit_runs_the_recorder_hardened_and_stops_it_cleanly():
    svc = _unit()["Service"]
    argv = shlex.split(svc["ExecStart"])
    args = build_parser().parse_args(argv[1:])  # the command line the unit runs is one pumpwatch accepts
    assert args.command == "run" and not args.simulate and args.duration is None
    assert svc["Restart"] == "always" and svc["User"] == "pumpwatch" and svc["KillSignal"] == "SIGTERM"
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes"
    assert args.data_dir in svc["ReadWritePaths"].split() and args.data_dir == "/var/lib/" + svc["StateDirectory"]
    assert int(svc["LimitNOFILE"]) >= 4096
    assert _unit()["Unit"]["StartLimitIntervalSec"] == "0"  # Restart=always never gives up


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    promtool = _need("promtool", "prometheus")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [promtool, "test", "rules", "pumpwatch-rules.test.yml"], capture_output=True, text=True, cwd=RULES.parent
    )
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, labels and keywords are not metric names)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^]]*\]", "", expr)  # ranges
    return {
        m
        for m in re.findall(r"\b[a-z_][a-z0-9_]*\b(?!\s*\()", expr)
        if m.startswith("pumpwatch_") or m in PROMETHEUS_OWN
    }


def _used_names() -> dict[str, set[str]]:
    # Each rule is `- alert: NAME` then `expr: ...` on one line (kept so in the rules file).
    pairs = re.findall(r"- alert: (\w+)\n\s+expr: (.+)", RULES.read_text())
    assert len(pairs) == RULES.read_text().count("- alert:")
    rules = {alert: _names(expr) for alert, expr in pairs}
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel["targets"]:
            rules[f"panel {panel['title']}"] = rules.get(f"panel {panel['title']}", set()) | _names(target["expr"])
    for ann in dash["annotations"]["list"]:
        rules[f"annotation {ann['name']}"] = _names(ann["expr"])
    return rules


def test_name_extraction():
    assert _names("increase(pumpwatch_upbit_errors[5m]) > 0.5 * increase(pumpwatch_upbit_polls[5m])") == {
        "pumpwatch_upbit_errors",
        "pumpwatch_upbit_polls",
    }
    assert _names('up{job="pumpwatch"} == 0') == {"up"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_metric_the_rules_and_dashboard_use_is_served(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    cfg = dataclasses.replace(config_mod.load(None), data_dir=str(tmp_path / "d"), metrics_address=address)
    # The listing early (2 s), so the detection's own series (delay) exist within a short run.
    scenario = SimScenario(faults=[], notices=[(2.0, "제로지(0G) KRW 마켓 디지털 자산 추가", ("0G",))])

    used = set().union(*_used_names().values())
    # The PostgreSQL sink's series exist only with a sink configured: its names come from the
    # same function /metrics uses for it.
    sink = {line.split("{")[0].split()[0] for line in metrics_lines({"collector_id": "x"}) if not line.startswith("#")}

    def served_names(body: str) -> set[str]:
        return {line.split("{")[0].split()[0] for line in body.splitlines() if line and not line.startswith("#")} | sink

    async def scrape_while_running() -> str:
        task = asyncio.create_task(run(cfg, simulate=True, duration=16, interactive=False, scenario=scenario))
        await asyncio.sleep(4)
        body = ""
        for _ in range(10):  # a loaded machine may detect the listing a little later
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
            )
            if not used - served_names(body) - PROMETHEUS_OWN:
                break
            await asyncio.sleep(1)
        await task
        return body

    body = asyncio.run(scrape_while_running())
    served = served_names(body)
    assert 'venue="binance-spot"' in body
    missing = {
        where: names - served - PROMETHEUS_OWN
        for where, names in _used_names().items()
        if names - served - PROMETHEUS_OWN
    }
    assert not missing, f"used by rules/dashboard but not in /metrics: {missing}"
    assert sum(map(len, _used_names().values())) > 30
