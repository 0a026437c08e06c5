#!/usr/bin/env python3
"""Checks a Grafana dashboard against the metrics usersync exports.

    scripts/check-grafana.py [deploy/grafana/usersync.json] [README.md]

The dashboard must be valid JSON, and every query in it (each panel target's `expr`, each
template variable's query) must name at least one metric, and only metrics that usersync
exports: the families in the README's Observability table (a test, tests/api/observability.rs,
checks that table against a scrape of the real binary), with `_bucket`, `_sum` and `_count`
for the histograms. Exits 1 naming each offending query.
"""

import json
import re
import sys

DASHBOARD = sys.argv[1] if len(sys.argv) > 1 else "deploy/grafana/usersync.json"
README = sys.argv[2] if len(sys.argv) > 2 else "README.md"

IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "atan2", "inf", "nan",
}


def exported_families(readme_path):
    """Metric families named in the first column of the Observability table, and which of them
    are histograms (the row's meaning says so)."""
    text = open(readme_path, encoding="utf-8").read()
    section = text.split("\n## Observability\n", 1)[1].split("\n## ", 1)[0]
    families, histograms = set(), set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 4 or not line.startswith("|"):
            continue
        names = re.findall(r"`(" + IDENT + r")`", cells[1])
        families.update(names)
        if "histogram" in cells[3]:
            histograms.update(names)
    if not families:
        sys.exit(f"{readme_path}: no metric found in the Observability table")
    return families, histograms


def metric_names(expr):
    """The metric names a PromQL expression reads (a lexical pass, enough for dashboards)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?" + IDENT + r"\}?", " ", expr)  # dashboard variables
    expr = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b|\b\d+[smhdwy]\b", " ", expr)  # numbers
    names = set()
    for match in re.finditer(IDENT, expr):
        following = expr[match.end():].lstrip()
        if following.startswith("("):  # a function or aggregation
            continue
        if match.group(0).lower() in KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def queries(node, where="dashboard"):
    """(where, query) for every panel target and template variable query."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield f"{where} target {node.get('refId', '?')}", node["expr"]
        for key, value in node.items():
            title = node.get("title") or node.get("name") or where
            if key == "templating":
                for variable in value.get("list", []):
                    if variable.get("type") != "query":
                        continue
                    query = variable.get("query")
                    if isinstance(query, dict):
                        query = query.get("query")
                    if isinstance(query, str):
                        yield f"variable ${variable.get('name')}", query
            elif key != "expr":
                yield from queries(value, f"panel {title!r}" if "targets" in node else where)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item, where)


def variable_query_metrics(query):
    """label_values(metric, label) reads `metric`; anything else is PromQL."""
    match = re.fullmatch(r"\s*label_values\(\s*(" + IDENT + r")\s*(\{[^}]*\})?\s*,\s*" + IDENT + r"\s*\)\s*", query)
    if match:
        return {match.group(1)}
    match = re.fullmatch(r"\s*(?:label_values|query_result)\((.*)\)\s*", query, re.S)
    return metric_names(match.group(1) if match else query)


def main():
    try:
        dashboard = json.load(open(DASHBOARD, encoding="utf-8"))
    except (OSError, ValueError) as e:
        sys.exit(f"{DASHBOARD}: not valid JSON: {e}")
    families, histograms = exported_families(README)
    allowed = set(families)
    for h in histograms:
        allowed.update({h + "_bucket", h + "_sum", h + "_count"})

    problems, checked = [], 0
    for where, query in queries(dashboard):
        checked += 1
        names = variable_query_metrics(query) if where.startswith("variable") else metric_names(query)
        if not names:
            problems.append(f"{where}: names no metric: {query}")
        for name in sorted(names - allowed):
            problems.append(f"{where}: {name} is not a metric usersync exports: {query}")
    if checked == 0:
        problems.append("no query found")
    for problem in problems:
        print(f"{DASHBOARD}: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{DASHBOARD}: {checked} queries, each naming only metrics usersync exports")


if __name__ == "__main__":
    main()
