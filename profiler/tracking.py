"""Which module of the model is running, in forward, backward and checkpoint recompute.

Imports torch at import: import this module only from inside the functions that need it.

``ModulePathTracker`` is torch's ``torch.utils.module_tracker.ModuleTracker`` (forward pre/post
hooks, and multi-grad hooks that re-enter a module while its backward runs) with the model's own
module paths as names instead of class-name paths. Backward attribution is as good as torch's:
a module whose inputs need no grad is entered in backward but only left when backward ends.
``ModuleStack`` (FLOPs) is exact in backward: it tags every autograd node with the module that
created it, and backward reads the tag of the node executing.
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


#: key of the module path in ``grad_fn.metadata`` (a dict stored on the C++ autograd node)
NODE_TAG = "tgauge.module"


def tag_graph(tensors: list[Any], path: str) -> None:
    """Tag every untagged autograd node behind ``tensors`` with ``path``.

    Stops at tagged nodes (the tagged set is closed under ``next_functions``: every walk tags
    all untagged nodes it reaches) and at ``AccumulateGrad`` leaves.
    """
    todo = [t.grad_fn for t in tensors if t.grad_fn is not None]
    while todo:
        node = todo.pop()
        if node is None or isinstance(node, torch._C._functions.AccumulateGrad):
            continue
        meta = node.metadata
        if NODE_TAG in meta:
            continue
        meta[NODE_TAG] = path
        todo.extend(child for child, _ in node.next_functions)


def node_term(node: Any) -> str:
    """Term name of the module that created autograd ``node``; ``(outside)`` if untagged."""
    path = None if node is None else node.metadata.get(NODE_TAG)
    return OUTSIDE_TERM if path is None else term_name(path)


class _TagCreated(torch.overrides.TorchFunctionMode):
    """Tags the autograd nodes each torch call creates with the module running it."""

    def __init__(self, stack: ModuleStack) -> None:
        super().__init__()
        self.stack = stack

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if torch.is_grad_enabled() and torch._C._current_graph_task_id() == -1:
            tensors = [out] if isinstance(out, torch.Tensor) else flatten_tensors(out)
            tag_graph(tensors, self.stack.current_path())
        return out


class ModuleStack:
    """The running module forwards, as a stack of model paths, and autograd-node tagging.

    Forward: ``innermost()`` is the module on top of the stack. Every autograd node created in
    forward is tagged (``node.metadata[NODE_TAG]``) with the path of the module running when it
    was created: a TorchFunctionMode walks each call's outputs, and each module's forward
    post-hook walks its outputs (nodes no torch call returned: custom autograd Functions).
    Backward: ``torch._C._current_autograd_node()`` names the node executing, hence its module.
    A module forward entered during backward is a checkpoint recompute.
    """

    def __init__(self, model: Any) -> None:
        self._paths = {id(m): path for path, m in model.named_modules()}
        self.stack: list[str] = []
        self.in_backward: list[bool] = []  # per stack entry: entered while backward ran
        self.recompute_depth = 0  # stack entries entered during backward
        self.recompute_seen = False

    def current_path(self) -> str:
        """Path of the innermost running module; ``(outside)`` when none runs."""
        return self.stack[-1] if self.stack else OUTSIDE_TERM

    def innermost(self) -> str:
        """Term name of the innermost running module; ``(outside)`` when none of the model's."""
        path = self.current_path()
        return OUTSIDE_TERM if path == OUTSIDE_TERM else term_name(path)

    def phase(self) -> str:
        """``forward``, ``backward``, or ``recompute`` (a module forward running in backward)."""
        if torch._C._current_graph_task_id() == -1:
            return "forward"
        return "recompute" if self.recompute_depth > 0 else "backward"

    def _pre_hook(self, mod: Any, args: Any) -> None:
        in_bw = torch._C._current_graph_task_id() != -1
        self.stack.append(self._paths.get(id(mod), OUTSIDE_TERM))
        self.in_backward.append(in_bw)
        if in_bw:
            self.recompute_depth += 1
            self.recompute_seen = True

    def _post_hook(self, mod: Any, args: Any, output: Any) -> None:
        if not self.stack:
            return
        path = self.stack.pop()
        if self.in_backward.pop():
            self.recompute_depth -= 1
        elif torch.is_grad_enabled():
            tag_graph(flatten_tensors(output), path)

    def __enter__(self) -> ModuleStack:
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        self._handles = [
            register_module_forward_pre_hook(self._pre_hook),
            register_module_forward_hook(self._post_hook, always_call=True),
        ]
        self._mode = _TagCreated(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
