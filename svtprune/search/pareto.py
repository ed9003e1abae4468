"""The trade-offs a search explored: every candidate it measured, and those no other candidate beats.

A user choosing a budget wants to see what a little more accuracy would have cost in bytes (and,
where candidates were timed, in latency): the front of the measured candidates answers that
without another run. Candidates are compared on what the search measured them on (its own
images, against the original's accuracy there), so the front is the search's view, before the
held-out check that the report's headline numbers come from. Only candidates measured on all of
a stage's images stand on the front: one the sequential test decided on its first 256 images
carries a standard error of 1-2 points, and its luck would draw the front.
"""

from __future__ import annotations

CRITERIA = ("param_bytes", "accuracy_drop")  # both lower is better
FILE_MEASURES = ("param_bytes", "file_bytes", "accuracy", "latency_ms_b1", "fastest_ms_b1", "latency_ms_b1_1thread",
                 "peak_rss_mb")  # fmt: skip


def non_dominated(points: list[dict], criteria: tuple[str, ...] = CRITERIA) -> list[dict]:
    """The points that no other point matches or beats on every criterion and beats on one (lower is better)."""

    def dominates(a: dict, b: dict) -> bool:
        return all(a[k] <= b[k] for k in criteria) and any(a[k] < b[k] for k in criteria)

    front = [p for p in points if not any(dominates(q, p) for q in points if q is not p)]
    unique = {tuple(p[k] for k in criteria): p for p in front}  # equal points: one stands for them
    return sorted(unique.values(), key=lambda p: tuple(p[k] for k in criteria))


def explored(report: dict) -> dict:
    """The report's ``pareto`` section: candidates of each stage, the front over all of them, the two files."""
    original = report["original"]
    if report.get("command") == "quantize":
        stages = [("quantization", report.get("evaluations", []), original["accuracy_search"])]
    else:  # compress: pruning judged on its own images, then the bit search (if any) on the whole split
        judged = original.get("accuracy_judged", original["accuracy_search"])
        stages = [("pruning", report.get("evaluations", []), judged)]
        bits = (report.get("quantization") or {}).get("evaluations")
        if bits:
            stages.append(("quantization", bits, original["accuracy_search"]))
    points, whole = [], []
    for stage, evaluations, baseline in stages:
        most = max((e.get("images") or 0 for e in evaluations), default=0)
        for e in evaluations:
            point = {
                "stage": stage,
                "label": e["label"],
                "param_bytes": e["param_bytes"],
                "accuracy_drop": round(baseline - e["accuracy"], 3),
                "images": e.get("images"),
            }
            if "latency_ms_b1" in e:
                point["latency_ms_b1"] = e["latency_ms_b1"]
            points.append(point)
            if (e.get("images") or 0) == most:
                whole.append(point)
    return {
        "criteria": list(CRITERIA),
        "measured_on": "the search split, against the original's accuracy there (held-out: the headline numbers)",
        "candidates": points,
        "front": non_dominated(whole),  # measured on every image of their stage
        "files": {side: {k: report[side].get(k) for k in FILE_MEASURES} for side in ("original", "compressed")},
    }
