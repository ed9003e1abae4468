"""How each operator carries channel labels from its inputs to its outputs.

One handler per operator family, registered in ``HANDLERS`` by the modules below. A handler
reads input labels, writes output labels, and records what pruning must touch: weight
slices (members), couplings between channels, constants to rewrite, and refusals with a
reason. An operator without a handler refuses every channel that reaches it.
"""

from svtprune.graph.ops import elementwise, layout, reductions, weighted  # noqa: F401  (registration)
from svtprune.graph.ops.registry import HANDLERS

__all__ = ["HANDLERS"]
