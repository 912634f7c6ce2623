#!/usr/bin/env python3
"""Checks the Grafana dashboard of the collector's Prometheus series.

    check_grafana.py packaging/grafana/flowmark-collector.json

- it is JSON, with a title, a uid and panels;
- a data-source variable of type prometheus exists, and every panel and query uses it
  (${datasource}), so that the dashboard imports into any Grafana;
- every PromQL expression (panel targets, variable queries) names only the series the
  prometheus backend exports for the collector, and at least one of them;
- every label a query groups or filters by is one of those series' labels, and every
  $variable used is defined (or one of Grafana's own);
- with promtool (Debian's `prometheus` package) on PATH: every panel expression, Grafana's
  variables replaced by values, parses as PromQL (`promtool check rules`).
Every problem is printed; exit 1 when there is any.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

METRICS = {"flowmark_collector_bytes_total", "flowmark_collector_flows_total",
           "flowmark_collector_open_flows"}
LABELS = {"experiment", "activity", "src_site", "dst_site"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan"}
GRAFANA_VARS = {"__rate_interval", "__interval", "__range", "__range_s", "__all"}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def check_expr(where, expr):
    """The metric names of a PromQL expression (anything that is not a function, keyword,
    label or number), each checked against METRICS; labels checked against LABELS."""
    label_values = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*",
                                expr)
    if label_values:
        metric, label = label_values.groups()
        if metric not in METRICS:
            problem(where, f"label_values of '{metric}', not one of {sorted(METRICS)}")
        if label not in LABELS:
            problem(where, f"label_values of label '{label}', not one of {sorted(LABELS)}")
        return {metric}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    for body in re.findall(r"\{([^}]*)\}", text):  # label matchers
        for name in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body):
            if name not in LABELS:
                problem(where, f"filters by label '{name}', not one of {sorted(LABELS)}")
    text = re.sub(r"\{[^}]*\}", " ", text)
    for body in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        for name in re.findall(r"\w+", body):
            if name not in LABELS:
                problem(where, f"groups by label '{name}', not one of {sorted(LABELS)}")
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors ([$__rate_interval], [5m])
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    metrics = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        metrics.add(name)
        if name not in METRICS:
            problem(where, f"names '{name}', not one of {sorted(METRICS)}")
    return metrics


def check_promql(promtool, exprs):
    """Each expression, variables replaced, as a recording rule that promtool parses."""
    values = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600"}
    rules = []
    for name, expr in exprs:
        e = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), ".*"), expr)
        rules.append(f"      - record: flowmark:check:{name}\n        expr: {json.dumps(e)}\n")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("groups:\n  - name: grafana\n    rules:\n" + "".join(rules))
    try:
        r = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            problem("promtool", (r.stdout + r.stderr).strip())
    finally:
        os.unlink(f.name)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    try:
        with open(path) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{path}: not valid JSON: {e}")
        return 1
    for key in ("title", "uid", "panels", "templating"):
        if key not in dash:
            problem(path, f"no '{key}'")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problem(path, "no data-source variable 'datasource' of type prometheus")
    used = set()
    exprs = 0

    def check_ds(where, d):
        if not isinstance(d, dict) or d.get("uid") != "${datasource}" \
                or d.get("type") != "prometheus":
            problem(where, f"data source {d!r}: use {{'type': 'prometheus', 'uid': "
                           f"'${{datasource}}'}}")

    for name, v in variables.items():
        if v.get("type") == "query":
            check_ds(f"variable {name}", v.get("datasource"))
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            used |= check_expr(f"variable {name}", q or "")
            exprs += 1
    for panel in dash.get("panels", []):
        where = f"panel {panel.get('id')} '{panel.get('title')}'"
        check_ds(where, panel.get("datasource"))
        targets = panel.get("targets") or []
        if not targets:
            problem(where, "no query")
        for t in targets:
            check_ds(f"{where} target {t.get('refId')}", t.get("datasource"))
            expr = t.get("expr", "")
            for var in re.findall(r"\$\{?(\w+)\}?", expr):
                if var not in variables and var not in GRAFANA_VARS:
                    problem(where, f"uses ${var}, which no variable defines")
            used |= check_expr(f"{where} target {t.get('refId')}", expr)
            exprs += 1
    promtool = shutil.which("promtool")
    if promtool:
        check_promql(promtool, [(f"panel{p.get('id')}_{t.get('refId')}", t.get("expr", ""))
                                for p in dash.get("panels", []) for t in p.get("targets", [])])
    else:
        print("note: no promtool on PATH: PromQL syntax not checked")
    missing = METRICS - used
    if missing:
        problem(path, f"no query uses {sorted(missing)}")
    for p in problems:
        print(p)
    print(f"{path}: {len(dash.get('panels', []))} panels, {exprs} expressions, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
