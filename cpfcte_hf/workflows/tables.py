# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The paper's tables as data (`paper_tables.yaml`, shipped in the package) and how `cpfcte-hf reproduce` writes ours
beside them: `tabulate` (tables.json) and `format_tables` (tables.md)."""

from __future__ import annotations

import math
from pathlib import Path

import yaml


PAPER_TABLES_FILE = Path(__file__).with_name("paper_tables.yaml")


def _load_paper_tables(path: Path = PAPER_TABLES_FILE) -> tuple[dict, dict, dict]:
    """(tables, what the paper's numbers of each table measure, what each of our metrics is) from `path`. A table's
    `rows` are `(row, variant, metric, the paper's number)`, its `extra_rows` `(row, variant, metric)`."""
    data = yaml.safe_load(path.read_text())
    tables, paper_metric = {}, {}
    for key, table in data["tables"].items():
        tables[str(key)] = {
            "title": table["title"],
            "rows": [(r["row"], r["variant"], r["metric"], r["paper"]) for r in table["rows"]],
            "extra_rows": [(r["row"], r["variant"], r["metric"]) for r in table.get("extra_rows") or []],
        }
        paper_metric[str(key)] = table["paper_metric"]
    return tables, paper_metric, dict(data["metrics"])


PAPER_TABLES, PAPER_METRIC, METRIC_NAMES = _load_paper_tables()


def table_spec(table: str, top_k_sweep=()) -> dict:
    """A paper table, or "K": CPF-CTE at each K of the sweep (not in the paper)."""
    if table == "K":
        return {
            "title": "K of Top-K (not in the paper: the paper's K is not given)",
            "rows": [(f"K = {k:g}", f"top_k={k:g}", "crf", None) for k in top_k_sweep],
            "extra_rows": [],
        }
    return PAPER_TABLES[table]


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def table_rows(spec: dict, results: dict) -> list[dict]:
    """The rows of one table: the paper's number (None for rows the paper has not) and ours over the seeds."""
    rows = []
    for name, variant, metric, paper in [*spec["rows"], *[(*extra, None) for extra in spec["extra_rows"]]]:
        values = [r[metric] for r in results.get(variant, []) if r.get(metric) is not None]
        rows.append(
            {
                "row": name,
                "variant": variant,
                "metric": metric,
                "paper": paper,
                "ours_mean": sum(values) / len(values) if values else None,
                "ours_std": _std(values),
                "ours_per_seed": values,
            }
        )
    return rows


def tabulate(tables: list[str], top_k_sweep, results: dict, commands: dict) -> dict:
    """tables.json's `tables`: per table its title, what the paper's numbers measure, the rows and the commands run.
    `results`: `{variant: [scores of one seed]}`; `commands`: `{variant: [cpfcte-hf command lines]}`."""
    report = {}
    for table in tables:
        spec = table_spec(table, top_k_sweep)
        rows = table_rows(spec, results)
        used = list(dict.fromkeys(row["variant"] for row in rows))
        report[table] = {
            "title": spec["title"],
            "paper_metric": PAPER_METRIC.get(table, "no"),
            "rows": rows,
            "commands": [c for variant in used for c in commands.get(variant, [])],
        }
    return report


def _cell(mean, std, count) -> str:
    if mean is None:
        return "n/a"
    if std is None:
        return f"{mean:.1f} (1 seed)"
    return f"{mean:.1f} ± {std:.1f} ({count} seeds)"


def format_tables(report: dict) -> str:
    """tables.md: per table, our numbers beside the paper's, what each number measures, and the commands run."""
    lines = [
        f"# Reproduction on {report['dataset']}",
        "",
        f"Seeds: {', '.join(str(s) for s in report['seeds'])}. Pseudo-labels scored on the "
        f"`{report['score_split']}` split. Written by `cpfcte-hf reproduce`.",
        "",
    ]
    for table in report["tables"].values():
        lines += [f"## {table['title']}", "", "| row | paper | ours | our metric |", "|---|---|---|---|"]
        for row in table["rows"]:
            paper = "—" if row["paper"] is None else f"{row['paper']:.1f}"
            ours = _cell(row["ours_mean"], row["ours_std"], len(row["ours_per_seed"]))
            lines.append(f"| {row['row']} | {paper} | {ours} | {METRIC_NAMES[row['metric']]} |")
        if table["paper_metric"] != "no":
            lines += ["", f"The paper's numbers: {table['paper_metric']}.", ""]
        else:
            lines += [""]
        lines += ["Commands:", "", "```", *table["commands"], "```", ""]
    return "\n".join(lines)


__all__ = ["METRIC_NAMES", "PAPER_METRIC", "PAPER_TABLES", "format_tables", "table_spec", "tabulate"]
