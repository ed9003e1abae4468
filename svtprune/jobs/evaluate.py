"""The eval job: accuracy (or agreement with a reference model), bytes and latency of one file."""

from __future__ import annotations

from pathlib import Path

from svtprune.checks import load_checked_data, load_checked_model
from svtprune.costs import Started
from svtprune.data_sources import check_preprocess_used
from svtprune.errors import UserError
from svtprune.evaluate import EvalResult, evaluate
from svtprune.hardware.profile import top_rows  # noqa: F401  (the CLI prints the table from the job's rows)
from svtprune.runtime import logits_of, make_session


def evaluate_file(
    model: str | Path,
    data: str | Path,
    reference: str | Path | None = None,
    batch: int | None = None,
    progress: bool = False,
    preprocess: str | Path | None = None,
    profile: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on ``data``; without labels, top-1 agreement with ``reference``.

    ``preprocess``: how an image folder's files become input (``svtprune.data_folder.parse_preprocess``).
    ``profile``: also each layer's share of the batch-1 time from ORT's profiler (``hardware.profile``).
    """
    if batch is not None and batch < 1:
        raise UserError(f"must be at least 1, got {batch}", option="batch")
    check_preprocess_used(preprocess, [data])
    proto = load_checked_model(model)  # one clear error for a missing, corrupt or unrunnable file
    dataset = load_checked_data(data, proto, preprocess)
    started = Started()  # the reference's logits count too
    ref_logits = logits_of(make_session(load_checked_model(reference)), dataset.x, batch) if reference else None
    result = evaluate(model, dataset, ref_logits, progress=progress, batch=batch)
    result.images_forwarded = started.images_forwarded()
    if profile:
        from svtprune.hardware.profile import layer_profile

        result.profile = layer_profile(proto)
    return result
