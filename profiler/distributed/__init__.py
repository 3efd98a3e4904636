"""Measure one training step on N ranks of torch.distributed, per rank, on the real engines.

- ``launch``: start the ranks (subprocesses of this Python, one free TCP port), watch them,
  stop them all when one fails, and say which rank failed and why;
- ``worker``: what one rank runs: the process group, the model, the engine, the measurement;
- ``engine``: the wrappers as torch ships them: FSDP2 ``fully_shard``, DTensor
  ``parallelize_module``, DDP + ``ZeroRedundancyOptimizer``, 2-D FSDP x TP;
- ``comm``: collectives per op type, counted by ``CommDebugMode``, with their bytes;
- ``memory``: parameters, gradients and optimizer states as the rank holds them (local
  shards of DTensors), saved activations and the live peak.

Importing this package is cheap: torch loads inside the modules that need it.
"""
