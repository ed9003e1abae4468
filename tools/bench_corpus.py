"""Run svtprune's command line over the exporter corpus, as a user would, and tabulate what happens.

The corpus (``tests/data/corpus/``, built by ``tools/make_corpus.py``) holds small ONNX graphs
of the families users bring, from the exporters users use. For every graph in its
``corpus.json`` this script runs, each as a subprocess in a fresh temporary folder:

    svtprune analyze G --json
    svtprune prune G --ratio 0.3 -o P.onnx --json
    svtprune verify G P.onnx --plan P.plan.json --json        (when prune wrote P.onnx)
    svtprune eval G --data rand16.npz --json                  (16 N(0,1) images, labels 0..9)
    svtprune eval P.onnx --data rand16.npz --json             (when prune wrote P.onnx)

and records each step's exit code, whether stderr holds a Python traceback, whether stdout is
exactly one JSON object, verify's verdict, and from analyze's JSON the share of the parameters
that sit in prunable groups. Run it with svtprune's own environment (no timm needed):

    /work/venv/bin/python tools/bench_corpus.py                     # whole corpus, markdown table
    /work/venv/bin/python tools/bench_corpus.py --only spikformer   # names containing "spikformer"
    /work/venv/bin/python tools/bench_corpus.py --json rows.json    # also dump the raw rows

Prunable share (from ``analyze --json``):
  * ``analyze share``: analyze's own ``prunable_share`` (prunable_param_bytes / param_bytes);
  * ``touched``: the bytes of the original file's initializers that some prunable group names as
    a member (source, sink or param), over analyze's ``param_bytes`` (a whole weight counts once
    one axis is prunable; a member name the file does not have -- e.g. a folded BatchNorm's
    bias -- counts through its group's ``params`` instead);
  * ``slots``: the sum of ``params`` over prunable groups over the sum over all groups (each
    group counts the weight slices it would slice, so a weight counts once per axis).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "corpus"
EXPECTED_REFUSAL = "reaches the model output"  # the classifier's own group: refused by design
TIMEOUT = 900


def svtprune_cmd() -> list[str]:
    exe = shutil.which("svtprune") or str(Path(sys.executable).with_name("svtprune"))
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "svtprune.cli"]


def run_step(args: list[str], cwd: Path) -> dict:
    """Run one CLI call; exit code, traceback flag, stdout JSON (exactly one object or a failure)."""
    t0 = time.time()
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="200")
    try:
        p = subprocess.run(svtprune_cmd() + args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = (
            "timeout",
            (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""),
            (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or ""),
        )
    step = {
        "args": args,
        "exit": rc,
        "seconds": round(time.time() - t0, 1),
        "traceback": "Traceback" in err,
        "stderr_head": _head(err),
        "stderr_tail": _tail(err),
    }
    if "--json" in args:
        try:
            obj = json.loads(out)
            step["json_ok"] = isinstance(obj, dict)
            step["json"] = obj if isinstance(obj, dict) else None
            if not isinstance(obj, dict):
                step["json_problem"] = f"stdout is JSON but a {type(obj).__name__}, not an object"
        except json.JSONDecodeError as e:
            step["json_ok"] = False
            step["json"] = None
            step["json_problem"] = (
                f"stdout is not exactly one JSON object ({e.msg}); stdout starts {out[:200]!r}"
                if out.strip()
                else "stdout is empty"
            )
    return step


def _head(err: str, n: int = 6) -> str:
    lines = [ln.rstrip() for ln in err.splitlines() if ln.strip()]
    return "\n".join(lines[:n])[:1500]


def _tail(err: str, n: int = 4) -> str:
    lines = [ln.rstrip() for ln in err.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])[:1500]


def _member_name(member: str) -> str:
    """'net.blocks.0.mlp.fc1.0.weight[1]:sink' -> 'net.blocks.0.mlp.fc1.0.weight'."""
    name = member.rsplit(":", 1)[0]
    return re.sub(r"\[\d+\]$", "", name)


def prunable_share(analysis: dict, graph_path: Path) -> dict:
    m = onnx.load(str(graph_path))
    sizes = {}
    for t in m.graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            a = numpy_helper.to_array(t)
            if a.size > 1:
                sizes[t.name] = int(a.nbytes)
    total = sum(sizes.values())
    groups = analysis.get("groups") or []
    touched, extra = set(), 0
    for g in groups:
        if not g.get("prunable"):
            continue
        names = {_member_name(x) for x in g.get("members", [])}
        known = names & sizes.keys()
        touched |= known
        if not known:
            extra += 4 * int(g.get("params", 0))
    # parameters only: a fixed-batch spiking export also stores initial membranes as float
    # constants, which analyze does not count as parameters
    denom = int(analysis.get("param_bytes") or total)
    share = (sum(sizes[n] for n in touched) + extra) / denom if denom else None
    all_params = sum(int(g.get("params", 0)) for g in groups)
    pr_params = sum(int(g.get("params", 0)) for g in groups if g.get("prunable"))
    refused = [g for g in groups if not g.get("prunable")]
    reasons = Counter(r for g in refused for r in (g.get("refused") or ["(no reason given)"]))
    unmatched = sorted({_member_name(x) for g in groups for x in g.get("members", [])} - sizes.keys())
    return {
        "share": None if share is None else min(share, 1.0),
        "slots": pr_params / all_params if all_params else None,
        "groups": len(groups),
        "prunable_groups": len(groups) - len(refused),
        "heads_groups": sum(1 for g in groups if g.get("heads")),
        "refusals": dict(reasons),
        "neurons": len(analysis.get("neurons") or []),
        "members_not_in_file": unmatched[:10],
        "file_param_bytes": total,
    }


def make_data(shape: list, path: Path, n: int = 16, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(0, classes, size=n).astype(np.int64)
    np.savez(path, x=x, y=y)


def bench_one(rec: dict, corpus: Path) -> dict:
    g = (corpus / rec["file"]).resolve()
    row = {
        k: rec.get(k)
        for k in (
            "name",
            "family",
            "source",
            "exporter",
            "opset",
            "batch",
            "layout",
            "spiking",
            "transformer_like",
            "params",
            "file_bytes",
            "nodes",
        )
    }
    steps = {}
    with tempfile.TemporaryDirectory(prefix="svtbench_") as td:
        td = Path(td)
        shape = [int(d) for d in rec["input_shape"][1:]]
        make_data(
            shape,
            td / "rand16.npz",
            classes=int(rec["output_shape"][-1]) if isinstance(rec["output_shape"][-1], int) else 10,
        )
        steps["analyze"] = run_step(["analyze", str(g), "--json"], td)
        a = steps["analyze"].get("json")
        if a:
            row["analyze_share"] = a.get("prunable_share")
            try:
                row.update(prunable_share(a, g))
            except Exception as e:  # noqa: BLE001
                row["share_error"] = f"{type(e).__name__}: {e}"
        steps["prune"] = run_step(["prune", str(g), "--ratio", "0.3", "-o", "P.onnx", "--json"], td)
        pj = steps["prune"].get("json") or {}
        row["memory_saving"] = pj.get("memory_saving")
        pruned = td / "P.onnx"
        row["pruned_written"] = pruned.exists()
        if steps["prune"]["exit"] == 0 and pruned.exists():
            plan = td / "P.plan.json"
            steps["verify"] = run_step(["verify", str(g), "P.onnx", "--plan", str(plan), "--json"], td)
            v = steps["verify"].get("json") or {}
            if "passed" in v:
                row["verify"] = "PASS" if v["passed"] else "FAIL"
            else:
                row["verify"] = f"exit {steps['verify']['exit']}"
            row["verify_detail"] = {
                k: v.get(k)
                for k in ("samples", "exact", "threshold_ties", "failures", "firing", "checks", "max_logit_diff")
                if k in v
            }
        else:
            row["verify"] = "-"
        steps["eval"] = run_step(["eval", str(g), "--data", "rand16.npz", "--json"], td)
        if pruned.exists():
            steps["eval_pruned"] = run_step(["eval", "P.onnx", "--data", "rand16.npz", "--json"], td)
    row["steps"] = steps
    return row


def first_refusal(row: dict) -> str:
    reasons = [r for r in (row.get("refusals") or {}) if not r.startswith(EXPECTED_REFUSAL)]
    return reasons[0] if reasons else ""


def short(s: str, n: int = 70) -> str:
    s = " ".join(str(s).split()).replace("|", "/")
    return s if len(s) <= n else s[: n - 1] + "…"


def step_cell(row: dict, key: str) -> str:
    st = row["steps"].get(key)
    if st is None:
        return "-"
    cell = str(st["exit"])
    if st.get("json_ok") is False:
        cell += " nojson"
    return cell


def table(rows: list[dict]) -> str:
    head = [
        "name",
        "family",
        "exp",
        "opset",
        "batch",
        "analyze share %",
        "touched %",
        "slots %",
        "groups (prunable)",
        "prune",
        "saving %",
        "verify",
        "eval",
        "eval P",
        "tracebacks",
        "first refusal / error",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        tb = [k for k, st in r["steps"].items() if st.get("traceback")]
        err = first_refusal(r)
        for k in ("analyze", "prune", "verify", "eval", "eval_pruned"):
            st = r["steps"].get(k)
            if st and st["exit"] not in (0,) and not (k == "verify" and st["exit"] == 1):
                err = f"{k}: " + (st["stderr_tail"].splitlines()[-1] if st["stderr_tail"] else f"exit {st['exit']}")
                break
        pct = lambda v: "-" if v is None else f"{100 * v:.0f}"  # noqa: E731
        out.append(
            "| "
            + " | ".join(
                [
                    r["name"],
                    r["family"],
                    r["exporter"],
                    str(r["opset"]),
                    str(r["batch"]),
                    pct(r.get("analyze_share")),
                    pct(r.get("share")),
                    pct(r.get("slots")),
                    f"{r.get('groups', '-')} ({r.get('prunable_groups', '-')})",
                    step_cell(r, "prune"),
                    pct(r.get("memory_saving")),
                    r.get("verify", "-"),
                    step_cell(r, "eval"),
                    step_cell(r, "eval_pruned"),
                    ",".join(tb) or "-",
                    short(err),
                ]
            )
            + " |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run svtprune's CLI over the exporter corpus.")
    ap.add_argument("--only", help="only graphs whose name contains this substring")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--json", type=Path, help="write the raw rows (every step's output) here")
    ap.add_argument("--render", type=Path, help="print the table of rows saved earlier with --json; run nothing")
    a = ap.parse_args(argv)
    doc = json.loads((a.corpus / "corpus.json").read_text())
    if a.render:
        rows = json.loads(a.render.read_text())
        for row in rows:  # re-derive the shares with this version's definitions
            an = row["steps"]["analyze"].get("json")
            g = a.corpus / f"{row['name']}.onnx"
            if an and g.exists():
                row["analyze_share"] = an.get("prunable_share")
                row.update(prunable_share(an, g))
        print(table([r for r in rows if not a.only or a.only in r["name"]]))
        return 0
    graphs = [r for r in doc["graphs"] if not a.only or a.only in r["name"]]
    rows = []
    for i, rec in enumerate(graphs, 1):
        t0 = time.time()
        row = bench_one(rec, a.corpus)
        rows.append(row)
        print(
            f"[{i}/{len(graphs)}] {rec['name']}: prune {row['steps']['prune']['exit']}, verify {row['verify']}, "
            f"eval {row['steps']['eval']['exit']} ({time.time() - t0:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(table(rows))
    fails = [f for f in doc.get("failed", []) if not a.only or a.only in f["name"]]
    if fails:
        print("\nExports that failed when the corpus was built (no file):")
        for f in fails:
            print(f"- {f['name']}: {short(f['error'], 200)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
