"""Terms: the named leaf quantities of one (spec, run), each a pure function of the spec and the
resolved run (estimator/shapes.py), one term per module of the reference model.

  params       parameters per module (spec only)
  flops        forward / backward / recompute FLOPs per module; decode's per-step FLOPs
  kv_cache     keys and values kept per layer
  activations  the tensors autograd saves for backward, per module
  optimizer    optimizer states per state name
  memory       every memory term of a step (weights, gradients, states, activations, cache)
               and the step's input tensors
  textbook     the study notes' closed forms beside the exact counts
What an implementation does differently is looked up by kind in estimator/rules/; a term
function never imports a rule module. When each term is live is estimator/replay/'s question.
"""
