"""Replays: what is live when. Each one walks the model the way its code runs and tracks the
live bytes (estimator/rules/live.py): the training forward's moment inside the last attention
(``forward``), autograd's backward (``backward``), the no-grad forward of a prefill or a
decode step (``inference``), the optimizer step (``optimizer_step``), and the step's timeline
over the memory terms that gives the peak and its phase (``peak``). What a module does in each
is its rule (estimator/rules/), looked up by kind.
"""
