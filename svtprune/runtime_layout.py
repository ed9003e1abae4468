"""Where a session keeps the batch: a fixed batch in its input, time-first logits in its output.

Exporters fix the batch (``dynamo=True`` sometimes does even when asked not to), and spikingjelly's
raw Spikformer returns ``[T, N, classes]`` (users take ``.mean(0)``). Every run (``runtime.batches``)
and every score (``runtime.logits_of``) reads both here, so no caller has to know either.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from svtprune.errors import UserError

Dims = list[int | str | None] | None  # as ORT reports them: ints, symbols, None for unknown


def fixed_batch(session: ort.InferenceSession) -> int | None:
    """The input's batch when the graph fixes it, else None: such a graph runs exactly that many images at once."""
    dims = session.get_inputs()[0].shape
    return dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None


def time_first(dims: Dims, batch: int | str | None) -> bool:
    """A rank-3 output whose axis 1 is the batch (the input's symbol or fixed size) and axis 0 is not: [T, N, classes].

    ``[1, 1, classes]`` on a batch-1 graph counts too (either reading gives the same mean)."""
    if dims is None or len(dims) != 3:
        return False
    steps, images = dims[0], dims[1]
    if images == batch and steps != batch:
        return True
    if isinstance(batch, int):
        return images == steps == batch == 1
    return not isinstance(images, int) and isinstance(steps, int)


def graph_time_first(model: onnx.ModelProto) -> bool:
    """``time_first`` of the first output as the graph declares it, for code that runs the graph without ORT (torch)."""
    constants = {t.name for t in model.graph.initializer}
    feed = next(v for v in model.graph.input if v.name not in constants)
    return time_first(_declared(model.graph.output[0]), (_declared(feed) or [None])[0])


def _declared(value: onnx.ValueInfoProto) -> Dims:
    kind = value.type.tensor_type
    if not kind.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in kind.shape.dim]


def _first_output(session: ort.InferenceSession) -> tuple[str, Dims, bool]:
    """Name, dims and time-first-ness of the first output (the logits)."""
    output, dims = session.get_outputs()[0], session.get_inputs()[0].shape
    return output.name, output.shape, time_first(output.shape, dims[0] if dims else None)


def logits_layout(session: ort.InferenceSession) -> str:
    """'batch' for logits ``[N, classes]``, 'time' for ``[T, N, classes]`` (scored as the mean over T).

    The owner of this decision: any other shape cannot be scored as a classifier's logits and is refused
    in one line before anything runs. An output whose rank the graph does not say is taken as
    ``[N, classes]`` and checked once it has run (``as_logits``)."""
    name, dims, time = _first_output(session)
    if time:
        return "time"
    if not dims or len(dims) == 2:
        return "batch"
    shown = ", ".join("?" if d is None else str(d) for d in dims)
    batch = session.get_inputs()[0].shape[0]
    tied = len(dims) == 3 and isinstance(batch, int) and dims[0] == dims[1] == batch
    hint = f"; with the batch fixed at T ({batch}) the two cannot be told apart: export at another batch"
    raise UserError(
        f"the model's output {name!r} has shape [{shown}]; svtprune scores logits [N, classes], or "
        "[T, N, classes] averaged over T (a raw spikingjelly output)" + hint * tied
    )


def as_logits(session: ort.InferenceSession, value: np.ndarray) -> np.ndarray:
    """The first output's value as users score it: ``[N, classes]``, time-first outputs averaged over T."""
    if logits_layout(session) == "time":
        value = value.mean(axis=0)
    if value.ndim != 2:
        raise UserError(f"the model's output has shape {list(value.shape)}; svtprune scores logits [N, classes]")
    return value


def batch_axis(session: ort.InferenceSession, name: str) -> int:
    """The axis that holds the images in output ``name``: 1 for time-first logits, else 0."""
    first, _, time = _first_output(session)
    return 1 if time and name == first else 0


def padded(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` grown to ``size`` images with copies of its own images (a fixed-batch graph's last chunk)."""
    return x if len(x) >= size else x[np.arange(size) % len(x)]


def unpadded(value: np.ndarray, real: int, size: int, axis: int) -> np.ndarray:
    """``value`` from a run padded from ``real`` to ``size`` images, without the padding's rows where they can be found.

    On ``axis`` when it has ``size`` entries; on axis 0 of ``k * size`` rows, time folded into the batch
    time-major as spikingjelly's ``flatten(0, 1)`` folds it. Any other value is kept whole: the padding is
    copies of real images, so there it can only weigh a few images twice, never add foreign ones."""
    if value.ndim <= axis:
        return value
    if value.shape[axis] == size:
        return np.take(value, np.arange(real), axis=axis)
    if axis == 0 and value.shape[0] % size == 0:
        steps = value.shape[0] // size
        return value.reshape(steps, size, *value.shape[1:])[:, :real].reshape(steps * real, *value.shape[1:])
    return value
