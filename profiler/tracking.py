"""Which module of the model is running, in forward, backward and checkpoint recompute.

Imports torch at import: import this module only from inside the functions that need it.

``ModulePathTracker`` is torch's ``torch.utils.module_tracker.ModuleTracker`` (forward pre/post
hooks, and multi-grad hooks that re-enter a module while its backward runs) with the model's own
module paths as names instead of class-name paths. Backward attribution is as good as torch's:
a module whose inputs need no grad is entered in backward but only left when backward ends.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.module_tracker import ModuleTracker

from profiler.naming import OUTSIDE_TERM, term_name

_GLOBAL = "Global"  # ModuleTracker's name for "no module"


class ModulePathTracker(ModuleTracker):
    """A ModuleTracker naming modules by their path in ``model`` (first owner of a shared one)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self._paths = {id(m): path for path, m in model.named_modules()}
        self._depth = {_GLOBAL: -1, OUTSIDE_TERM: 0}
        for path in self._paths.values():
            self._depth[path] = path.count(".") + 1 if path else 0
        self.forward_depth = 0  # module forwards running now (in backward: a recompute)
        self.recompute_seen = False

    def _get_mod_name(self, mod: Any) -> str:  # overrides ModuleTracker's class-name paths
        return self._paths.get(id(mod), OUTSIDE_TERM)

    def _fw_pre_hook(self, mod: Any, input: Any) -> None:
        self.forward_depth += 1
        if torch._C._current_graph_task_id() != -1:
            self.recompute_seen = True
        super()._fw_pre_hook(mod, input)

    def _fw_post_hook(self, mod: Any, input: Any, output: Any) -> None:
        self.forward_depth -= 1
        super()._fw_post_hook(mod, input, output)

    def innermost(self) -> str:
        """Term name of the deepest running module; ``(outside)`` when none of the model's."""
        deepest = max(self.parents, key=lambda name: (self._depth.get(name, 0), name))
        return OUTSIDE_TERM if deepest in (_GLOBAL, OUTSIDE_TERM) else term_name(deepest)

    def phase(self) -> str:
        """``forward``, ``backward``, or ``recompute`` (a module forward running in backward)."""
        in_backward = torch._C._current_graph_task_id() != -1
        if not in_backward:
            return "forward"
        return "recompute" if self.forward_depth > 0 else "backward"


def flatten_tensors(value: Any) -> list[Any]:
    """Every tensor inside nested tuples / lists / dicts / model outputs."""
    from torch.utils._pytree import tree_flatten

    if hasattr(value, "to_tuple"):  # Hugging Face ModelOutput
        value = value.to_tuple()
    leaves, _ = tree_flatten(value)
    return [x for x in leaves if isinstance(x, torch.Tensor)]
