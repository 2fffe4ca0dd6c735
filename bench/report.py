#!/usr/bin/env python3
"""Writes docs/performance.md from bench/performance.md.in and the rows the
bench scripts emitted (bench/lib.sh, "Results protocol"), and draws the
charts with gnuplot. bench/run calls it; run it alone to re-render:

  python3 bench/report.py --results docs/perf/results.tsv \\
      --template bench/performance.md.in --doc docs/performance.md \\
      --charts docs/perf --mode full

Every figure in the template is a directive, filled from the medians over
the runs (spreads are min-max over runs):

  {{meta:FIELD}}                       date, cpus, cpu, memory, os, commit, mode
  {{cmd:BENCH}}                        the command that produced BENCH's rows
  {{time:BENCH}}                       how long BENCH took in this run
  {{v:KEY}} {{v:KEY@X}}                a median, with its unit
  {{s:KEY@X}}                          a median and its spread
  {{check:KEY@X<=LIMIT}}               a target's verdict (<=, >=)
  {{x:KEY@max}}                        X may be "max": the largest x measured
  {{points:BENCH|METRIC=label|...}}    a table of single figures
  {{curve:BENCH|x label|METRIC=label|...}}
                                       a table, one row per x
  {{chart:NAME|title|x label|y label|OPTS|KEY=label;KEY=label}}
                                       a PNG (OPTS: logx, logy, or -) and
                                       its markdown link

A figure the run did not produce renders as "n/a" and is listed at the end
of the report: a report is never silently short.
"""

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

UNITS = [  # suffix, unit shown, decimals (None: integer with separators)
    ("_rps", "/s", None),
    ("_ms", " ms", 2),
    ("_us", " µs", 1),
    ("_kib", " KiB", None),
    ("_mib", " MiB", 1),
    ("_bytes", " B", None),
    ("_ratio", "×", 2),
    ("_count", "", None),
    ("_pct", " %", 1),
    ("_s", " s", 2),
]


def unit_of(key):
    for suffix, unit, dec in UNITS:
        if key.endswith(suffix):
            return unit, dec
    return "", 3


def fmt_num(key, v, with_unit=True):
    if v is None:
        return "n/a"
    unit, dec = unit_of(key)
    if dec is None:
        text = f"{v:,.0f}"
    elif dec == 2 and abs(v) >= 100:
        text = f"{v:,.0f}"
    elif dec == 2 and abs(v) >= 10:
        text = f"{v:,.1f}"
    elif dec == 2 and abs(v) < 0.1 and v != 0:
        text = f"{v:.3f}"
    else:
        text = f"{v:,.{dec}f}"
    return text + (unit if with_unit else "")


class Results:
    def __init__(self, path):
        self.meta, self.cmds, self.times, self.rows = {}, {}, {}, {}
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line:
                    continue
                parts = line.split("\t")
                if parts[0] == "#meta" and len(parts) >= 3:
                    self.meta[parts[1]] = parts[2]
                elif parts[0] == "#cmd" and len(parts) >= 3:
                    self.cmds[parts[1]] = parts[2]
                elif parts[0] == "#time" and len(parts) >= 3:
                    self.times[parts[1]] = int(parts[2])
                elif len(parts) == 4 and not parts[0].startswith("#"):
                    key, x, _run, value = parts
                    try:
                        v = float(value)
                    except ValueError:
                        print(f"report: {path}:{lineno}: not a number: {value!r}", file=sys.stderr)
                        continue
                    if math.isfinite(v):
                        self.rows.setdefault((key, x), []).append(v)
                else:
                    print(f"report: {path}:{lineno}: ignored: {line[:80]!r}", file=sys.stderr)

    def values(self, key, x="-"):
        return self.rows.get((key, x))

    def median(self, key, x="-"):
        vals = self.values(key, x)
        return statistics.median(vals) if vals else None

    def xs(self, prefix):
        """The x values of a bench's curve, in numeric order."""
        found = {x for (k, x) in self.rows if k.startswith(prefix + ".") and x != "-"}
        return sorted(found, key=lambda x: float(x))


class Report:
    def __init__(self, res, doc, charts, mode):
        self.res, self.doc, self.charts, self.mode = res, doc, charts, mode
        self.missing = []
        self.gnuplot = shutil.which("gnuplot")

    def split_key(self, spec):
        """KEY, KEY@X, or KEY@max (the largest x the run measured KEY at)."""
        key, _, x = spec.partition("@")
        key, x = key.strip(), (x.strip() or "-")
        if x == "max":
            xs = [x for x in self.res.xs(key.split(".")[0]) if self.res.values(key, x)]
            x = xs[-1] if xs else "max"
        return key, x

    def d_x(self, arg):
        """{{x:KEY@max}}: the x that KEY@max resolved to, as a number."""
        _, x = self.split_key(arg)
        return "n/a" if x in ("-", "max") else f"{float(x):,.0f}"

    def figure(self, key, x, spread):
        vals = self.res.values(key, x)
        if not vals:
            self.missing.append(f"{key}@{x}" if x != "-" else key)
            return "n/a"
        text = fmt_num(key, statistics.median(vals))
        if spread and len(vals) > 1:
            text += f" ({fmt_num(key, min(vals), False)}–{fmt_num(key, max(vals), False)})"
        return text

    def d_meta(self, arg):
        return self.res.meta.get(arg, "n/a")

    def d_cmd(self, arg):
        cmd = self.res.cmds.get(arg)
        if not cmd:
            self.missing.append(f"command of {arg}")
            return f"`bench/run --only {arg}`"
        return f"`bench/run --only {arg}` (runs `{cmd}`)"

    def d_time(self, arg):
        t = self.res.times.get(arg)
        return "n/a" if t is None else f"{t // 60} min {t % 60} s"

    def d_v(self, arg):
        return self.figure(*self.split_key(arg), spread=False)

    def d_s(self, arg):
        return self.figure(*self.split_key(arg), spread=True)

    def d_check(self, arg):
        m = re.fullmatch(r"\s*([^<>=]+?)\s*(<=|>=)\s*([-0-9.e]+)\s*", arg)
        if not m:
            raise ValueError(f"bad check: {arg}")
        key, x = self.split_key(m.group(1))
        limit = float(m.group(3))
        v = self.res.median(key, x)
        if v is None:
            self.missing.append(f"{key}@{x}")
            return "not measured"
        ok = v <= limit if m.group(2) == "<=" else v >= limit
        rel = "≤" if m.group(2) == "<=" else "≥"
        verdict = "**met**" if ok else "**not met**"
        return f"{verdict} ({fmt_num(key, v)}; target {rel} {fmt_num(key, limit)})"

    @staticmethod
    def pairs(fields):
        out = []
        for f in fields:
            metric, _, label = f.partition("=")
            out.append((metric.strip(), (label or metric).strip()))
        return out

    def d_points(self, arg):
        bench, *fields = arg.split("|")
        lines = ["| measurement | median | runs (min–max) |", "|---|---:|---|"]
        for metric, label in self.pairs(fields):
            key = f"{bench}.{metric}"
            vals = self.res.values(key)
            if not vals:
                self.missing.append(key)
                lines.append(f"| {label} | n/a | |")
                continue
            spread = (
                f"{fmt_num(key, min(vals), False)}–{fmt_num(key, max(vals), False)} ({len(vals)})"
                if len(vals) > 1
                else "1 run"
            )
            lines.append(f"| {label} | {fmt_num(key, statistics.median(vals))} | {spread} |")
        return "\n".join(lines)

    def d_curve(self, arg):
        bench, xlabel, *fields = arg.split("|")
        cols = self.pairs(fields)
        xs = self.res.xs(bench)
        lines = [
            "| " + " | ".join([xlabel] + [c[1] for c in cols]) + " |",
            "|" + "---:|" * (len(cols) + 1),
        ]
        if not xs:
            self.missing.append(f"{bench} curve")
            lines.append("| n/a |" + " |" * len(cols))
        for x in xs:
            cells = [f"{float(x):,.0f}"]
            for metric, _ in cols:
                key = f"{bench}.{metric}"
                vals = self.res.values(key, x)
                if not vals:
                    cells.append("–")  # not measured at this x (the table says which x have it)
                    continue
                cell = fmt_num(key, statistics.median(vals))
                if len(vals) > 1 and min(vals) != max(vals):
                    cell += f" <sub>{fmt_num(key, min(vals), False)}–{fmt_num(key, max(vals), False)}</sub>"
                cells.append(cell)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def d_chart(self, arg):
        name, title, xlabel, ylabel, opts, series_spec = arg.split("|")
        series = []
        for s in series_spec.split(";"):
            key, _, label = s.partition("=")
            series.append((key.strip(), (label or key).strip()))
        png = os.path.join(self.charts, name + ".png")
        link = os.path.relpath(png, os.path.dirname(os.path.abspath(self.doc)) or ".")
        blocks, labels = [], []
        for key, label in series:
            bench = key.split(".")[0]
            pts = []
            for x in self.res.xs(bench):
                vals = self.res.values(key, x)
                if vals:
                    pts.append((float(x), statistics.median(vals), min(vals), max(vals)))
            if pts:
                blocks.append(pts)
                labels.append(label)
            else:
                self.missing.append(f"{key} (chart {name})")
        if not blocks:
            return f"*(chart {name}: no data in this run)*"
        if not self.gnuplot:
            print("report: gnuplot not installed: charts skipped", file=sys.stderr)
            return f"*(chart {name}: gnuplot missing)*"
        dat = os.path.join(self.charts, name + ".dat")
        with open(dat, "w", encoding="utf-8") as f:
            for pts in blocks:
                for p in pts:
                    f.write("%g %g %g %g\n" % p)
                f.write("\n\n")
        script = [
            'set terminal pngcairo size 760,440 font "sans,10"',
            f"set output {gp_str(png)}",
            f"set title {gp_str(title)}",
            f"set xlabel {gp_str(xlabel)}",
            f"set ylabel {gp_str(ylabel)}",
            "set key below",
            "set termoption noenhanced",
            "set grid",
        ]
        if "logx" in opts:
            script.append("set logscale x")
        if "logy" in opts:
            script.append("set logscale y")
        else:
            script.append("set yrange [0:*]")
        script.append("set offsets graph 0.03, graph 0.03, graph 0.05, 0")
        plots = [
            f"{gp_str(dat)} index {i} using 1:2:3:4 with yerrorlines lw 2 pt 7 title {gp_str(label)}"
            for i, label in enumerate(labels)
        ]
        script.append("plot " + ", ".join(plots))
        r = subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"gnuplot failed for {name}: {r.stderr.strip()}")
        os.unlink(dat)
        return f"![{title}]({link})"

    def render(self, template):
        def sub(m):
            kind, _, arg = m.group(1).partition(":")
            fn = getattr(self, "d_" + kind, None)
            if fn is None:
                raise ValueError(f"unknown directive {{{{{m.group(1)}}}}}")
            return fn(arg)

        text = re.sub(r"\{\{(.+?)\}\}", sub, template, flags=re.S)
        if self.missing:
            seen = sorted(set(self.missing))
            text += "\n## Not measured in this run\n\n"
            text += "These figures had no rows in the results (a bench failed or was not run):\n\n"
            text += "".join(f"- `{m}`\n" for m in seen)
        return text


def gp_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--template", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--charts", required=True)
    ap.add_argument("--mode", default="full", choices=["full", "quick"])
    a = ap.parse_args()
    os.makedirs(a.charts, exist_ok=True)
    res = Results(a.results)
    rep = Report(res, a.doc, a.charts, a.mode)
    with open(a.template, encoding="utf-8") as f:
        template = f.read()
    text = rep.render(template)
    if a.mode == "quick":
        text = (
            "> Smoke run (`bench/run --quick`): one short run of the smallest sizes. "
            "These figures show that the scripts work, not how fast roster is.\n\n" + text
        )
    tmp = a.doc + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, a.doc)
    n = len(set(rep.missing))
    print(f"report: wrote {a.doc} ({len(res.rows)} figures, {n} missing)", file=sys.stderr)


if __name__ == "__main__":
    main()
