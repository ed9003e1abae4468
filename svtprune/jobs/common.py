"""The skeleton every search job shares: split the data, measure the start, fine-tune, write the set.

The data is split once (seeded) into a search split, on which every candidate is scored, and a
held-out split that only the final model sees: the reported accuracy is never the number the
search tuned on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from svtprune.checks import classes_of
from svtprune.costs import phase
from svtprune.data import Dataset
from svtprune.deploy import deploy_paths, deployment
from svtprune.errors import UserError
from svtprune.evaluate import top1
from svtprune.graph.io import model_bytes
from svtprune.jobs.options import MIN_SPLIT_IMAGES, FinetuneOptions, SplitOptions
from svtprune.outputs import OutputSet
from svtprune.progress import Say
from svtprune.runtime import logits_of, make_session, release_freed_memory


def split(data: Dataset, options: SplitOptions, say: Say | None = None) -> tuple[Dataset, Dataset]:
    """Search and held-out halves of a seeded sample of at most ``options.max_images`` (``images_used``)."""
    if len(data) < MIN_SPLIT_IMAGES:
        raise UserError(
            f"has {len(data)} images; the search needs at least {MIN_SPLIT_IMAGES} (2,000+ recommended)", "data"
        )
    order = np.random.default_rng(options.seed).permutation(len(data))
    used = images_used(len(data), options)
    if used < len(data) and say is not None:
        say(f"using a seeded sample of {used:,} of the {len(data):,} images (--max-images; 0 uses them all)")
    size = min(options.calib or used // 2, used - 50)
    return data.subset(np.sort(order[:size])), data.subset(np.sort(order[size:used]))


def images_used(available: int, options: SplitOptions) -> int:
    """How many images the split takes: all, or the cap (raised to twice ``--calib`` when that asks for more)."""
    if not options.max_images:
        return available
    return min(available, max(options.max_images, 2 * (options.calib or 0)))


@dataclass
class Start:
    """The starting model on both halves of the data: its targets and accuracy (and a session when asked)."""

    search: Dataset
    held: Dataset
    model: onnx.ModelProto
    logits: dict[str, np.ndarray]  # "search" / "held" -> the starting model's logits
    targets: dict[str, np.ndarray]  # labels, or the starting model's predictions when the data has none
    baseline: dict[str, float]  # top-1 of the starting model on each half
    data_images: int  # in the user's file or folder: the halves are a sample of them when fewer
    _session: ort.InferenceSession | None = field(default=None, repr=False)

    @classmethod
    def measure(cls, model: onnx.ModelProto, search: Dataset, held: Dataset, data_images: int) -> Start:
        session = make_session(model)
        with phase("baseline"):
            logits = {name: logits_of(session, part.x) for name, part in (("search", search), ("held", held))}
        targets = {
            name: part.y if part.y is not None else logits[name].argmax(axis=1)
            for name, part in (("search", search), ("held", held))
        }
        baseline = {name: top1(logits[name], targets[name]) for name in ("search", "held")}
        del session  # its arena holds a batch's activations through the whole search otherwise (0.6 GB at 9.3M)
        release_freed_memory()
        return cls(search, held, model, logits, targets, baseline, data_images)

    @property
    def session(self) -> ort.InferenceSession:
        """A session of the starting model, made when first needed (the report times it, fine-tuning reads it)."""
        if self._session is None:
            self._session = make_session(self.model)
        return self._session

    def held_accuracy(self, model: onnx.ModelProto) -> float:
        return top1(logits_of(make_session(model), self.held.x), self.targets["held"])

    def holds(self, max_accuracy_drop: float) -> Callable[[float], bool]:
        """The user's accuracy constraint on held-out data, exactly as the report checks it."""
        return lambda accuracy: self.baseline["held"] - accuracy <= max_accuracy_drop

    def metric(self) -> str:
        return "top1 accuracy" if self.search.y is not None else "top1 agreement with the original"

    def data_section(self, data_path: str | Path, seed: int) -> dict:
        return {
            "path": str(data_path),
            "labels": self.search.y is not None,
            "seed": seed,
            "images": self.data_images,  # in the file or folder; the halves below are a sample when fewer
            "search_images": len(self.search),
            "held_out_images": len(self.held),
        }


def tuning(
    model: onnx.ModelProto, search: Dataset, options: FinetuneOptions, seed: int, preprocess: Any = None
) -> Tuning | None:
    """The fine-tuning step, its data checked before the search so a bad file fails in seconds, not after it."""
    if options.finetune_data is None:
        return None
    from svtprune.recover.finetune import load_training_data

    classes = classes_of(model, search.x)
    data = load_training_data(options.finetune_data, search, classes, options.finetune_epochs, preprocess)
    return Tuning(data, options, seed)


@dataclass(frozen=True)
class Tuning:
    """Fine-tuning as a step of a job: the checked training data and the options."""

    data: Dataset
    options: FinetuneOptions
    seed: int

    def run(self, model: onnx.ModelProto, before: float, start: Start, notes: dict, say: Say) -> tuple:
        """Distil the starting model into ``model`` (on its grids when quantized), then check held-out.

        The search split picks the best epoch; the held-out split stays unseen until the check.
        ``before`` is the model's held-out accuracy; ``notes`` go into the report section.
        Returns the tuned model, the report section and the tuned model's held-out accuracy.
        """
        from svtprune.recover.finetune import finetune_model

        epochs, lr = self.options.finetune_epochs, self.options.finetune_lr
        tuned, section = finetune_model(model, start.session, self.data, start.search, epochs, self.seed, lr, log=say)
        after = start.held_accuracy(tuned)
        section.update(data=str(self.options.finetune_data), **notes)
        section.update(accuracy_before=round(before, 3), accuracy_after=round(after, 3))
        return tuned, section, after


def claim_outputs(out: Path, inputs: tuple[str | Path | None, ...], force: bool, format: str = "onnx") -> OutputSet:
    """A search job's four files (model, plan, JSON and HTML reports), checked and locked before the search.

    With ``format`` 'ort', also the ``.ort`` file and its operator config (deploy.py)."""
    return OutputSet.claim(job_files(out) + deploy_paths(out, format), inputs, force)


def job_files(out: Path) -> tuple[Path, Path, Path, Path]:
    return out, out.with_suffix(".plan.json"), out.with_suffix(".report.json"), out.with_suffix(".report.html")


def write_outputs(
    outputs: OutputSet, model: onnx.ModelProto, plan_json: str, report: dict, format: str = "onnx"
) -> None:
    """The model, its plan and its reports beside it, all or none.

    With ``format`` 'ort' the ``.ort`` file and its operator config are made from the model's bytes
    first and written in the same set; ``report`` gains their summary as ``deployment``."""
    from svtprune.report import report_texts

    out, plan_path, json_path, html_path = outputs.paths[:4]
    data = model_bytes(model)
    extra = deployment(data, out, format)
    if extra is not None:
        report["deployment"] = extra.section()
    json_text, html_text = report_texts(report)
    files = {out: data, plan_path: plan_json, json_path: json_text, html_path: html_text}
    outputs.write({**files, **(extra.contents() if extra else {})})


def worse_than_input(
    saving: float, file_bytes: tuple[int, int], speedup: float | None = None, faster_in_time: bool = False
) -> list[str]:
    """A result no better than its input is not one (exit 1, nothing written), whatever the budgets allow.

    ``saving`` is of parameter bytes as stored; ``file_bytes`` are the input file's and the result's as
    written; ``speedup`` (the slower of batch 1 and 64) is given when speed is what the user asked for.
    ``faster_in_time``: the model runs fewer time steps (or its stem once) and is measured faster at both
    batch sizes: better with no byte saved."""
    reasons = []
    if saving <= 0 and not faster_in_time:
        reasons.append("nothing could be removed within the accuracy budget")
    elif file_bytes[1] > file_bytes[0]:
        reasons.append(f"the result ({file_bytes[1]:,} bytes) would be larger than the input ({file_bytes[0]:,} bytes)")
    if speedup is not None and speedup < 1.0:
        reasons.append(f"the result is slower than the input ({speedup:.2f}x)")
    return reasons


MIN_JUDGED = 100  # search images that must remain beside the calibration images to judge on them alone


def judged_part(
    search: Dataset, start: Start, calibration_images: int | None
) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The search images candidates are judged on, their targets and the original's logits on them.

    A re-fitted model is never judged on the images it was fitted to: on those it looks better
    than it is (each look would then be optimistic by the share of calibration images in it).
    """
    rest = len(search) - (calibration_images or 0)
    if not calibration_images or rest < MIN_JUDGED:
        return search, start.targets["search"], start.logits["search"]
    rows = np.arange(calibration_images, len(search))
    return search.subset(rows), start.targets["search"][rows], start.logits["search"][rows]
