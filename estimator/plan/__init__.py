"""Planning: the inverse questions asked of the estimate. Hardware (GPUs, overheads, roofline
step times), capacity (does it fit, largest batch, longest context, fewest GPUs, sharding),
serving (throughput, a paged KV cache's concurrency) and sweeps (the estimate over a grid).

A new parallel strategy or serving engine changes what a rank holds: it belongs here, on top
of the terms and the timeline (estimator/terms/, estimator/replay/peak.py), never inside them.
"""
