"""The optional torch extra: which commands need it, and the one-line error when it is missing.

A plain ``pip install svtprune`` brings what the ONNX-side commands need (analyze, prune, verify,
eval, energy, compress, quantize, demo): numpy, onnx and onnxruntime, no torch. Fine-tuning
(``finetune``, ``--finetune-data``) and ``export`` build torch modules; they need
``pip install 'svtprune[torch]'`` (torch and spikingjelly, pinned in setup.cfg).
"""

from __future__ import annotations

import importlib

from svtprune.errors import UserError

TORCH_EXTRA = "pip install 'svtprune[torch]'"
TORCH_MODULES = ("torch", "spikingjelly")


def require_torch(command: str | None = None, option: str | None = None) -> None:
    """Raise a one-line UserError naming the extra when torch or spikingjelly does not import.

    ``command`` names what needs torch ("finetune", "export"); or ``option`` names the field that
    asked for it (``finetune_data``; the CLI spells it as its flag).
    """
    for name in TORCH_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            reason = f"{name} is not installed" if exc.name == name else f"{name} does not import: {exc}"
            who = f"{command} " if command else ""
            raise UserError(f"{who}needs the torch extra ({reason}); install it with {TORCH_EXTRA}", option) from None
