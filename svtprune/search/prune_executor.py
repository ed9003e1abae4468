"""The pruning executor: builds ratio plans on one analysed model and scores them.

Speed: a policy may ask for a *screen* (a fixed, seeded subset of the search split, scored as
the paired difference to the original model on the same images, so the estimate is of the
full-split accuracy) before paying for a full measurement. Re-fits are cached: the original
layers' outputs once per search, and each layer's fit under the plan of everything upstream.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from svtprune.costs import phase
from svtprune.data import Dataset
from svtprune.graph.analysis import Analysis
from svtprune.graph.io import param_bytes
from svtprune.graph.plan import Plan, keep_mask, kept_for_ratio
from svtprune.graph.surgery import keep_storage, prune
from svtprune.hardware.energy import measure_energy
from svtprune.recover.reconstruct import reconstruct
from svtprune.recover.targets import TargetStore
from svtprune.runtime import PairedTiming, logits_of, make_session, measured_latency, release_freed_memory
from svtprune.search.records import Measurement
from svtprune.search.sequential import ACCEPTED, SequentialTest, hits_on, judge


@dataclass
class PruneExecutor:
    """Applies ratio plans to one analysed model and scores them on the search split."""

    analysis: Analysis
    scores: dict[str, np.ndarray]
    data: Dataset
    target: np.ndarray  # labels, or the original model's predictions when the data has none
    original_bytes: int
    records: list[Measurement] = field(default_factory=list)
    calibration: np.ndarray | None = None  # images for least-squares recovery; None turns it off
    screen_images: int = 500  # size of the screening subset (used when the split has twice as many)
    max_rows: int | None = 32768  # rows per fit: all 25,088 of a block layer, 1/12 of a stem conv
    original_logits: np.ndarray | None = None  # the unpruned model on ``data``, if the caller has it already
    timing: PairedTiming | None = None  # objective latency: time every full candidate against the original
    latency_rank: dict[str, float] | None = None  # group -> speedup of pruning it alone (objective latency)
    energy_images: np.ndarray | None = None  # objective energy: firing rates of every full candidate on these
    energy_rank: dict[str, float] | None = None  # group -> energy saving of pruning it alone (objective energy)
    deadline: float | None = None  # time.perf_counter() after which candidates are no longer scored
    not_measured: int = 0  # candidates the policy asked for after the deadline
    _targets: TargetStore = field(default_factory=TargetStore, repr=False)
    _fits: dict[Hashable, tuple] = field(default_factory=dict, repr=False)
    _upstream: dict[str, list[str]] | None = field(default=None, repr=False)
    _reference: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _cached_for: np.ndarray | None = field(default=None, repr=False)
    _last: tuple | None = field(default=None, repr=False)  # (plan key, model, image -> correct, calibration)
    _session: tuple | None = field(default=None, repr=False)  # (model, its session): the candidate being looked at
    _decided: dict[Hashable, tuple[Measurement, dict[int, bool]]] = field(default_factory=dict, repr=False)
    _decided_for: np.ndarray | None = field(default=None, repr=False)

    def plan_for(self, ratios: dict[str, float]) -> Plan:
        plan = Plan(meta={"ratios": {k: v for k, v in ratios.items() if v > 0}})
        for group in self.analysis.prunable_groups:
            ratio = ratios.get(group.name, 0.0)
            plan.kept[group.name] = kept_for_ratio(self.analysis, group, ratio, self.scores[group.name])
        return plan

    def build(self, ratios: dict[str, float]) -> onnx.ModelProto:
        plan = self.plan_for(ratios)
        model = prune(self.analysis, plan, check=False, stored=self.calibration is None)
        if self.calibration is None:
            return model
        atom_keep = keep_mask(self.analysis, plan)
        layers: dict[str, np.ndarray | None] = {}
        for member in self.analysis.members:
            if member.role == "sink" and not atom_keep[member.ids].all():
                layers.setdefault(member.node, None)
        for member in self.analysis.members:
            if member.role == "source" and member.node in layers:
                layers[member.node] = atom_keep[member.ids]
        if self._cached_for is not self.calibration:  # another calibration set: the caches do not apply
            self._targets.clear()
            self._fits.clear()
            self._cached_for = self.calibration
        keys = {name: self._fit_key(name, plan) for name in layers}
        with phase("re-fit"):
            refitted = reconstruct(
                self.analysis.model,
                model,
                layers,
                self.calibration,
                targets=self._targets,
                cache=self._fits,
                keys=keys,
                max_rows=self.max_rows,
                gram_dtype=np.float32,
            )
        return keep_storage(refitted, self.analysis)  # re-fitted weights round to the type the file stores

    def _fit_key(self, layer: str, plan: Plan) -> Hashable:
        """Everything a layer's fit depends on: the kept channels of every group at or above it."""
        if self._upstream is None:
            self._upstream = upstream_groups(self.analysis)
        return (layer, tuple((g, tuple(int(k) for k in plan.kept[g])) for g in self._upstream.get(layer, [])))

    def screen_index(self) -> np.ndarray | None:
        """The screening subset (seeded, sorted), or None when the split is too small to bother."""
        if len(self.data) < 2 * self.screen_images:
            return None
        chosen = np.random.default_rng(0).choice(len(self.data), self.screen_images, replace=False)
        return np.sort(chosen)

    def past_deadline(self, ratios: dict[str, float], label: str) -> Measurement | None:
        """After the time limit, an unscored placeholder that no budget accepts: a step not measured is not taken."""
        if self.deadline is None or time.perf_counter() <= self.deadline:
            return None
        self.not_measured += 1
        return Measurement(f"{label} (time limit)", 0.0, 0, 0.0, dict(ratios), measured=False)

    def measure(
        self, ratios: dict[str, float], label: str, screen: bool = False, test: SequentialTest | None = None
    ) -> Measurement:
        """Accuracy on the search split, or with ``screen`` its paired estimate from a subset.

        With ``test``, the images are taken in growing slices until the test decides (a screen
        stops at ``screen_images``), and the record carries the verdict. A full measurement right
        after a screen of the same plan reuses the built model and the images already scored, so
        screening first costs nothing when the step survives.
        """
        late = self.past_deadline(ratios, label)
        if late is not None:
            return late
        earlier = self.recall(ratios, label, screen, test)
        if earlier is not None:
            return earlier
        started = time.perf_counter()
        model, known = self._model_and_known(ratios)
        if test is None:
            accuracy, stderr, images, verdict = self._fixed_slice(model, known, screen)
        else:
            accuracy, stderr, images, verdict = self._sequential(model, known, screen, test)
        full = verdict == ACCEPTED if test is not None else not screen or self.screen_index() is None
        latency = self.timing.latency(model) if self.timing is not None and full else None
        energy = self._energy(model) if full else None
        record = Measurement(
            label, accuracy, param_bytes(model), time.perf_counter() - started, dict(ratios), images=images,
            stderr=stderr, latency_ms=latency, energy_uj=energy, verdict=verdict,
        )  # fmt: skip
        self.records.append(record)
        self.remember(ratios, screen, test, record, known)
        self._session = None  # its arena holds a batch's activations: not kept between candidates
        release_freed_memory()
        return record

    def recall(
        self, ratios: dict[str, float], label: str, screen: bool, test: SequentialTest | None
    ) -> Measurement | None:
        """The record of a plan already measured the same way, recorded again under ``label`` at no cost.

        The same plan, images and look order give the same numbers, so nothing is rebuilt or
        forwarded. PrimeSVT's step for a group that passed its whole scan, with nothing accepted
        before it, is the scan's last point again (on the reference: 256 images and a re-fit).
        """
        if self._decided_for is not self.calibration:  # another calibration set: other models, other numbers
            self._decided.clear()
            self._decided_for = self.calibration
        known = self._decided.get((_plan_key(ratios), screen, test))
        if known is None:
            return None
        record = replace(known[0], label=label, seconds=0.0, reused=True)
        self.records.append(record)
        return record

    def remember(
        self,
        ratios: dict[str, float],
        screen: bool,
        test: SequentialTest | None,
        record: Measurement,
        known: dict[int, bool] | None = None,
    ) -> None:
        """Keep a measured record (and the images it scored) for ``recall``; unmeasured placeholders are not kept."""
        if record.measured:
            self._decided[(_plan_key(ratios), screen, test)] = (record, dict(known or {}))

    def _model_and_known(self, ratios: dict[str, float]) -> tuple[onnx.ModelProto, dict[int, bool]]:
        """The candidate's model and the images already scored on it (the last plan's, when it is the same;
        otherwise those a remembered record of the plan scored)."""
        key = _plan_key(ratios)
        if self._last is not None and self._last[0] == key and self._last[3] is self.calibration:
            return self._last[1], self._last[2]
        scored = [known for (plan, _screen, _test), (_r, known) in self._decided.items() if plan == key]
        model, known = self.build(ratios), dict(max(scored, key=len, default={}))
        self._last = (key, model, known, self.calibration)
        return model, known

    def _correct(self, model: onnx.ModelProto, known: dict[int, bool], wanted: np.ndarray) -> np.ndarray:
        """Per image of ``wanted``: does the candidate get it right (scoring only the images not yet known)."""
        return hits_on(known, wanted, lambda rows: self._hits(model, rows))

    def _hits(self, model: onnx.ModelProto, rows: np.ndarray) -> np.ndarray:
        if self._session is None or self._session[0] is not model:  # one session for all looks at a candidate
            self._session = (model, make_session(model))
        return logits_of(self._session[1], self.data.x[rows]).argmax(axis=1) == self.target[rows]

    def _fixed_slice(self, model: onnx.ModelProto, known: dict[int, bool], screen: bool) -> tuple:
        """(accuracy, stderr, images, None) on the whole split, or on the screening subset paired with the original."""
        rows = self.screen_index() if screen else None
        wanted = np.arange(len(self.data)) if rows is None else rows
        correct = self._correct(model, known, wanted)
        if rows is None:
            return 100.0 * float(correct.mean()), 0.0, len(wanted), None
        reference = self._original_correct()  # paired on the same images: far less noise than two samples
        change = correct - reference[rows]
        stderr = 100.0 * float(change.std() / np.sqrt(len(rows)))
        return 100.0 * float(reference.mean() + change.mean()), stderr, len(wanted), None

    def _sequential(self, model: onnx.ModelProto, known: dict[int, bool], screen: bool, test: SequentialTest) -> tuple:
        """(accuracy, stderr, images, verdict) from the first look at which ``test`` decides."""
        reference = self._original_correct()
        cap = self.screen_images if screen else None
        order = self.look_order()
        estimate, verdict = judge(lambda rows: self._correct(model, known, rows), reference, order, test, cap)
        return 100.0 * float(reference.mean()) - estimate.drop, estimate.stderr, estimate.images, verdict

    def look_order(self) -> np.ndarray:
        """The sequential test's image order: one seeded permutation, so every look extends the last."""
        if "order" not in self._reference:
            self._reference["order"] = np.random.default_rng(0).permutation(len(self.data))
        return self._reference["order"]

    def latency_of(self, ratios: dict[str, float]) -> tuple[float, float]:
        """Latency of the plan's structure alone (no re-fit: weights do not change the time)."""
        model = prune(self.analysis, self.plan_for(ratios), check=False)
        return self.timing.latency(model) if self.timing is not None else measured_latency(model)

    def energy_of(self, ratios: dict[str, float]) -> float:
        """Estimated uJ per image of the plan (with recovery: re-fitted weights change the firing)."""
        return self._energy(self.build(ratios))

    def _energy(self, model: onnx.ModelProto) -> float | None:
        if self.energy_images is None:
            return None
        return measure_energy(model, self.energy_images).energy_uj

    def _original_correct(self) -> np.ndarray:
        if "correct" not in self._reference:
            logits = self.original_logits
            if logits is None:
                logits = logits_of(make_session(self.analysis.model), self.data.x)
            self._reference["correct"] = (logits.argmax(axis=1) == self.target).astype(np.float64)
        return self._reference["correct"]

    def saving(self, record: Measurement) -> float:
        return 1.0 - record.param_bytes / self.original_bytes


def _plan_key(ratios: dict[str, float]) -> tuple:
    return tuple(sorted((k, v) for k, v in ratios.items() if v > 0))


def upstream_groups(analysis: Analysis) -> dict[str, list[str]]:
    """For each node, the groups with a member at that node or any node it depends on."""
    nodes = analysis.model.graph.node
    producer = {out: node.name for node in nodes for out in node.output}
    at_node: dict[str, set[str]] = {}
    for group in analysis.groups:
        for member in group.members:
            at_node.setdefault(member.node, set()).add(group.name)
    above: dict[str, set[str]] = {}
    for node in nodes:  # topological order: every producer is done before its consumers
        groups = set(at_node.get(node.name, ()))
        for name in node.input:
            if name in producer:
                groups |= above[producer[name]]
        above[node.name] = groups
    prunable = {g.name for g in analysis.prunable_groups}
    return {name: sorted(groups & prunable) for name, groups in above.items()}
