"""Which tokens to leave out of the blocks, measured without labels, and the plan meta that records them.

A token's importance is how far the logits move when it alone is left out (the mean absolute change
over the calibration images): one short run per token. On the reference Spikformer this ranking kept
held-out accuracy better than ranking by firing rate (docs/benchmark-log.md, "Token pruning").
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.errors import UserError
from svtprune.runtime import logits_of, make_session
from svtprune.spiking.tokens import TokenAxis, drop_tokens, find_token_axis

RANK_IMAGES = 128  # calibration images each drop-one run sees (the ranking is stable from ~100)
META_KEY = "tokens_kept"
NEEDS_DATA = "needs --data: the tokens left out are those that move the logits least"


def token_axis_of(model: onnx.ModelProto, path: object) -> TokenAxis:
    """The model's token axis; a graph whose blocks cannot be followed token by token is the user's input (exit 2)."""
    axis = find_token_axis(model)
    if isinstance(axis, str):
        raise UserError(f"{path}: no tokens to leave out: {axis}")
    return axis


def check_token_count(count: int, axis: TokenAxis) -> None:
    """``--drop-tokens K`` must leave at least one of the blocks' tokens (exit 2 naming the flag)."""
    if not 1 <= count < axis.count:
        raise UserError(
            f"must be in [1, {axis.count - 1}]: the blocks see {axis.count} tokens, got {count}", "drop_tokens"
        )


def token_ranking(model: onnx.ModelProto, axis: TokenAxis, x: np.ndarray) -> list[int]:
    """Grid positions, least important first (ties by position), from drop-one runs on ``x``."""
    x = x[:RANK_IMAGES]
    reference = logits_of(make_session(model), x)
    change = np.zeros(axis.count)
    for token in range(axis.count):
        keep = [t for t in range(axis.count) if t != token]
        change[token] = np.abs(logits_of(make_session(drop_tokens(model, axis, keep)), x) - reference).mean()
    return np.argsort(change, kind="stable").tolist()


def without_tokens(model: onnx.ModelProto, count: int, x: np.ndarray, path: object) -> tuple[onnx.ModelProto, dict]:
    """``model`` with the ``count`` least important tokens left out of its blocks, and the plan meta saying so."""
    axis = token_axis_of(model, path)
    check_token_count(count, axis)
    keep = sorted(token_ranking(model, axis, x)[count:])
    meta = {META_KEY: keep, "tokens": axis.count, "token_grid": list(axis.grid)}
    return drop_tokens(model, axis, keep), meta


def with_plan_tokens(model: onnx.ModelProto, meta: dict, path: object) -> tuple[onnx.ModelProto, str | None]:
    """``model`` with the tokens a plan's meta leaves out left out the same way (for ``verify``), and a line."""
    keep = meta.get(META_KEY)
    if keep is None:
        return model, None
    axis = token_axis_of(model, path)
    return drop_tokens(model, axis, list(keep)), f"{len(keep)} of {axis.count} tokens through the blocks"
