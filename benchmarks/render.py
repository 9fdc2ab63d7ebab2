"""Render BENCHMARKS.md from benchmark JSON files: ``python -m benchmarks.render FILE... > BENCHMARKS.md``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _command(name: str) -> str:
    return f"kinodiff bench {name} --json benchmarks/results/{name}.json"


def _peer(peer) -> str:
    # A peer is a name, or a dict with its name (or runtime) and value.
    if not peer:
        return ""
    if isinstance(peer, dict):
        label = peer.get("name", peer.get("runtime", ""))
        return f"{label} {_value(peer['value'])}" if "value" in peer else str(label)
    return str(peer)


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def render(paths: list[Path]) -> str:
    """Markdown for the given benchmark JSON files."""
    out = ["# Benchmarks", "",
           "Rendered by `python -m benchmarks.render benchmarks/results/*.json > BENCHMARKS.md` from "
           "the JSON that `kinodiff bench NAME --json OUT` writes. Peers run in the same process, so "
           "ratios compare like with like on this shared, noisy machine.", ""]
    # Notes on how and under what load the figures were taken, kept beside the JSON they describe.
    notes = Path(paths[0]).parent / "NOTES.md" if paths else None
    if notes is not None and notes.is_file():
        out += [notes.read_text().strip(), ""]
    for path in paths:
        doc = json.loads(path.read_text())
        m = doc["machine"]
        out += [f"## {doc['benchmark']}", "",
                f"Command: `{_command(doc['benchmark'])}`", "",
                f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['threads']}, "
                f"torch {m['versions'].get('torch')}, mujoco {m['versions'].get('mujoco')}.", "",
                "| metric | value | unit | config | peer | ratio to peer |", "|---|---|---|---|---|---|"]
        for r in doc["results"]:
            peer_txt = _peer(r.get("peer"))
            ratio = r.get("ratio_to_peer")
            cfg = ", ".join(f"{k}={v}" for k, v in r.get("config", {}).items())
            out.append(f"| {r['metric']} | {_value(r['value'])} | {r['unit']} | {cfg} | {peer_txt} | "
                       f"{_value(ratio) if ratio is not None else ''} |")
        out += ["", "| bar | value | threshold | met |", "|---|---|---|---|"]
        for b in doc["bars"]:
            met = {True: "yes", False: "NO"}.get(b["met"], "not measured")
            out.append(f"| {b['bar']} | {_value(b['value'])} | {b['threshold']} | {met} |")
        out.append("")
        if doc["benchmark"] == "policy-latency":
            out += ["Pareto front (success vs chunk latency): "
                    "![pareto](benchmarks/results/policy-latency-pareto.png)", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render([Path(p) for p in sys.argv[1:]]))
