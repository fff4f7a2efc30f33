#!/usr/bin/env python3
"""promcheck.py: checks a Prometheus text-format scrape with the reference Python parser
(prometheus_client.parser, installed by scripts/bootstrap into the cache's venv).

  promcheck.py samples SCRAPE
      Parses SCRAPE (exit 1 on any format error) and prints its samples as JSON:
      [{"name": ..., "labels": {...}, "value": ...}, ...], for the test to assert values on.
  promcheck.py dashboard DASHBOARD.json SCRAPE...
      Every metric name used in the dashboard's PromQL expressions must be a family or a sample
      name of one of the scrapes (a family's HELP/TYPE counts, so a counter that has not moved
      yet is found). Prints the names it checked; exit 1 naming the missing ones.
"""
import json
import re
import sys

from prometheus_client.parser import text_string_to_metric_families


def parse(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    families = list(text_string_to_metric_families(text))
    if not families:
        raise ValueError(f"{path}: no metric families")
    # The parser accepts a TYPE line without samples; it also reports the HELP/TYPE names as
    # family names (counters without their _total suffix).
    return families, text


def known_names(families, text):
    names = set()
    for fam in families:
        names.add(fam.name)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        if fam.type == "histogram":
            names.update(fam.name + s for s in ("_bucket", "_sum", "_count"))
        for s in fam.samples:
            names.add(s.name)
    names.update(re.findall(r"^# TYPE (\S+)", text, re.M))
    return names


def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield v
            else:
                yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)


PROMQL_WORDS = {"sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "max",
                "min", "avg", "count", "le", "on", "ignoring", "group_left", "group_right",
                "deriv", "delta", "clamp_min", "clamp_max", "topk", "bottomk", "abs", "or", "and",
                "unless", "offset", "vector", "scalar", "label_replace", "time", "changes"}


def metric_names(expr):
    expr = re.sub(r'"[^"]*"', '""', expr)      # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)      # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)     # ranges
    expr = re.sub(r"\$\w+", "", expr)          # dashboard variables
    names = set()
    for tok in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if tok not in PROMQL_WORDS and (tok.startswith("tp_")):
            names.add(tok)
    return names


def main(argv):
    if len(argv) == 3 and argv[1] == "samples":
        families, _ = parse(argv[2])
        out = [{"name": s.name, "labels": s.labels, "value": s.value}
               for fam in families for s in fam.samples]
        json.dump(out, sys.stdout)
        return 0
    if len(argv) >= 4 and argv[1] == "dashboard":
        with open(argv[2], encoding="utf-8") as f:
            dash = json.load(f)
        known = set()
        for path in argv[3:]:
            known |= known_names(*parse(path))
        used = set()
        for e in exprs(dash):
            used |= metric_names(e)
        if not used:
            print("the dashboard uses no tp_* metric", file=sys.stderr)
            return 1
        missing = sorted(used - known)
        print("checked: " + " ".join(sorted(used)))
        if missing:
            print("not in the scrape: " + " ".join(missing), file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
