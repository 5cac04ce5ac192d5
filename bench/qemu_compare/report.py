"""The results of bench/vs_qemu.py as JSON, a markdown table and a PNG plot."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from common import RESULTS, machine_description

from qemu_compare.plan import PAIRS, Sizes, metrics

Cell = dict[str, object]
SYSTEMS = [system for pair in PAIRS for system in pair]


def sections(sizes: Sizes) -> list[str]:
    return ["instruction steps/s", "breakpoint hits/s",
            f"breakpoint hits/s with {sizes.others:,} others", "breakpoint hits/s, 2 vCPUs",
            "breakpoint costs", "next",
            "run alone (s)", "run attached (s)", "pushf image", "dap step cycle"]


def _cost_total(runs: list, count: int) -> Cell:
    """set + first resume + remove of `count` breakpoints, over the runs that worked."""
    totals = [r["set"] + r["first resume"] + r["remove"] for r in runs if "set" in r
              and "remove" in r]
    if not totals:
        failed = next((r["failed"] for r in runs if "failed" in r), "no run finished")
        return {"failed": failed}
    return {"min": min(totals), "median": statistics.median(totals), "max": max(totals),
            "runs": len(totals)}


def assemble(sizes: Sizes, systems: dict[str, str], skipped: dict[str, str],
             table: dict[str, dict]) -> dict:
    rows: dict[str, dict[str, Cell]] = {}
    for name in ("instruction steps/s", "breakpoint hits/s",
                 f"breakpoint hits/s with {sizes.others:,} others",
                 "breakpoint hits/s, 2 vCPUs"):
        rows[name] = table[name]
    for count in sizes.breakpoint_counts:
        if count >= 1_000 or count == sizes.breakpoint_counts[-1]:
            rows[f"set + resume + remove {count:,} breakpoints (s)"] = {
                system: runs if "not available" in runs else _cost_total(runs[count], count)
                for system, runs in table["breakpoint costs"].items()}
    rows[f"next over the {sizes.line_iterations:,}-iteration line (s)"] = table["next"]
    rows["guest run time alone (s)"] = table["run alone (s)"]
    rows["guest run time, debugger attached (s)"] = table["run attached (s)"]
    speed: dict[str, Cell] = {}
    for system, alone in table["run alone (s)"].items():
        attached = table["run attached (s)"].get(system, {})
        if "median" in alone and "median" in attached:
            speed[system] = {"value": 100 * alone["median"] / attached["median"]}
    rows["guest speed attached, % of alone"] = speed
    rows["TF seen by the guest after stepping PUSHF"] = {
        system: ({"value": bool(image & 0x100), "image": image} if isinstance(image, int)
                 else image) for system, image in table["pushf image"].items()}
    return {"machine": machine_description(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "sizes": sizes.__dict__, "systems": systems, "skipped": skipped, "rows": rows,
            "breakpoint costs": table["breakpoint costs"],
            "dap step cycle (ms)": table["dap step cycle"],
            "ratios": ratios(sizes, rows)}


def ratios(sizes: Sizes, rows: dict[str, dict[str, Cell]]) -> dict[str, dict[str, Cell]]:
    """ours vs theirs per metric and pair, oriented so that > 1 means ours is better."""
    out: dict[str, dict[str, Cell]] = {}
    for metric in metrics(sizes):
        cells = rows.get(metric.name, {})
        out[metric.name] = {}
        for mine, theirs in PAIRS:
            a, b = cells.get(mine, {}), cells.get(theirs, {})
            if "median" not in a or not ("median" in b or "lower bound" in b):
                continue
            their_value = b.get("median", b.get("lower bound"))
            ratio = a["median"] / their_value if metric.higher_is_better \
                else their_value / a["median"]
            out[metric.name][f"{mine} vs {theirs}"] = {
                "ratio": ratio, "at least": "lower bound" in b, "target": metric.target,
                "met": ratio >= metric.target if metric.target else None}
    return out


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(cell: Cell | None) -> str:
    if not cell:
        return ""
    if "median" in cell:
        text = _fmt(cell["median"])
        if cell.get("runs", 1) > 1:
            text += f" ({_fmt(cell['min'])}-{_fmt(cell['max'])})"
        return text
    if "lower bound" in cell:
        return f"> {_fmt(cell['lower bound'])} (capped)"
    if "value" in cell:
        value = cell["value"]
        if isinstance(value, bool):
            return f"yes ({cell['image']:#x})" if value else f"no ({cell['image']:#x})"
        return f"{value:.0f}%"
    if "not available" in cell:
        return "not available"
    return "failed"


def markdown(results: dict) -> str:
    header = ["metric"]
    for mine, theirs in PAIRS:
        header += [mine, theirs, "ratio"]
    lines = [f"Machine: {results['machine']}; run {results['time']}.", ""]
    lines += [f"- {name}: {desc}" for name, desc in results["systems"].items()]
    lines += [f"- {name}: skipped: {why}" for name, why in results["skipped"].items()]
    lines += ["", "| " + " | ".join(header) + " | target |",
              "|" + "---|" + "---:|" * (len(header) - 1) + "---|"]
    targets = {m: r for m, r in results["ratios"].items()}
    for metric, cells in results["rows"].items():
        row = [metric]
        target = ""
        for mine, theirs in PAIRS:
            ratio = targets.get(metric, {}).get(f"{mine} vs {theirs}")
            ratio_text = ""
            if ratio:
                value = ratio["ratio"]
                ratio_text = ("≥ " if ratio["at least"] else "") + \
                    (f"{value:,.1f}x" if value >= 1 else f"{value:.2g}x")
                if ratio["target"]:
                    target = f"{ratio['target']:g}x"
                    if not ratio["met"]:
                        ratio_text += f" (missed: {ratio['ratio'] / ratio['target']:.2f} of it)"
            row += [_cell(cells.get(mine)), _cell(cells.get(theirs)), ratio_text]
        if metric.startswith("guest speed attached"):
            target = "≥ 95% (ours)"
        if metric.startswith("TF seen"):
            target = "no"
        lines.append("| " + " | ".join(row) + f" | {target} |")
    dap = results["dap step cycle (ms)"]
    if dap:
        lines += ["", "DAP step cycle (next -> stopped -> threads -> stackTrace -> scopes -> "
                  "variables, bench/dap_latency.py), ours only:", ""]
        for system, cell in dap.items():
            if "median_ms" in cell:
                lines.append(f"- {system}: median {cell['median_ms']:.2f} ms, "
                             f"p95 {cell['p95_ms']:.2f} ms")
            else:
                lines.append(f"- {system}: failed: {cell.get('failed')}")
    lines += ["", "Not available / failed cells:", ""]
    for metric, cells in results["rows"].items():
        for system, cell in cells.items():
            for key in ("not available", "failed", "note"):
                if isinstance(cell, dict) and key in cell:
                    lines.append(f"- {metric}, {system}: {cell[key]}")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path:
    """Cost of set + first resume + remove against the number of breakpoints."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for system, by_count in results["breakpoint costs"].items():
        if not isinstance(by_count, dict) or "not available" in by_count:
            continue
        points = [(int(count), _cost_total(runs, int(count))) for count, runs in
                  by_count.items()]
        points = [(n, cell["median"]) for n, cell in points if "median" in cell]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=system)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("breakpoints set")
    axes.set_ylabel("set + first resume + remove (s, median)")
    axes.set_title("Cost against number of breakpoints")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def save(results: dict, directory: Path = RESULTS) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "vs_qemu.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path = directory / "vs_qemu.md"
    md_path.write_text("# bench/vs_qemu.py\n\n" + markdown(results))
    return [json_path, md_path, plot(results, directory / "vs_qemu.png")]
