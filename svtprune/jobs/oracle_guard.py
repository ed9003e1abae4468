"""The guarantee: no command writes a pruned model that fails the oracle.

The analysis is built to be sound, but graphs users export hold patterns no rule has seen. So every
plan that ``prune`` or ``compress`` is about to write has its plain prune run against the oracle (the
original with the removed slices zeroed) on a few random inputs; a plan that fails is never written.
Before a search, each group is screened the same way (all at once, then one by one only if that
fails), and a group whose prune disagrees with the oracle is refused with that reason, so the search
goes on without it. The cost is a few forward passes of two small sessions, next to a search's
thousands of images.
"""

from __future__ import annotations

import numpy as np

from svtprune.errors import ConstraintError
from svtprune.graph.analysis import Analysis, Group
from svtprune.graph.plan import Plan, kept_for_ratio
from svtprune.graph.surgery import prune, zero_out
from svtprune.jobs.verify import compare_with_oracle, random_input
from svtprune.progress import Say

GUARD_SAMPLES = 4
TRIAL_RATIO = 0.3  # a trial prune per group: this share of channels, one head where heads can go
REFUSAL = "its prune does not match the oracle on random inputs (a pattern svtprune cannot follow yet)"


def oracle_holds(analysis: Analysis, plan: Plan) -> bool:
    """The plan's plain prune equals the oracle on ``GUARD_SAMPLES`` random inputs (ties allowed).

    A prune that cannot be built or run (surgery wrote an invalid graph) fails too."""
    x = random_input(analysis.model, GUARD_SAMPLES)
    try:
        return bool(compare_with_oracle(zero_out(analysis, plan), prune(analysis, plan), x)["passed"])
    except Exception:  # noqa: BLE001 - any way the surgery can go wrong is a failed check, never a crash
        return False


def screen_groups(analysis: Analysis, say: Say | None = None) -> list[str]:
    """Refuse, in place, every prunable group whose trial prune fails the oracle; their names."""
    groups = analysis.prunable_groups
    if not groups or oracle_holds(analysis, _trial_plan(analysis, groups)):
        return []
    failing = [g for g in groups if not oracle_holds(analysis, _trial_plan(analysis, [g]))]
    for group in failing:
        group.refused.append(REFUSAL)
    if failing and say is not None:
        say(f"refused {len(failing)} group(s) whose prune fails the oracle: {', '.join(g.name for g in failing)}")
    return [g.name for g in failing]


def guard_plan(analysis: Analysis, plan: Plan) -> list[str]:
    """Drop from ``plan`` (in place) the groups whose prune fails the oracle, refusing them; their names.

    Raises ConstraintError when the plan still fails without them: nothing is written then.
    """
    if not plan.kept or oracle_holds(analysis, plan):
        return []
    failing = [name for name, kept in plan.kept.items() if not oracle_holds(analysis, Plan({name: kept}))]
    for name in failing:
        del plan.kept[name]
        analysis.group(name).refused.append(REFUSAL)
    if not plan.kept or not oracle_holds(analysis, plan):
        raise ConstraintError(f"the pruned model does not match the oracle; nothing written ({REFUSAL})")
    return failing


def check_plan(analysis: Analysis, plan: Plan) -> None:
    """The last look before writing: raise ConstraintError if the plan's prune fails the oracle."""
    if plan.kept and not oracle_holds(analysis, plan):
        raise ConstraintError(f"the chosen plan does not match the oracle; nothing written ({REFUSAL})")


def _trial_plan(analysis: Analysis, groups: list[Group]) -> Plan:
    rng = np.random.default_rng(0)  # a scattered kept set tests the surgery harder than the first channels
    plan = Plan(meta={"method": "oracle-screen"})
    for group in groups:
        drop = 1 if group.head_rows and group.heads_removable else 0
        plan.kept[group.name] = kept_for_ratio(analysis, group, TRIAL_RATIO, rng.random(group.size), drop_heads=drop)
    return plan
