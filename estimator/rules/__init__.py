"""Rules: what one implementation of a module kind saves, allocates, caches or replays, kept as
data registered per (module kind, implementation), as torch's flop_counter keeps one formula
per op.

``registry`` holds the table and the lookup (``rule(kind, spec, shapes)``); ``live`` the
live-bytes tracker the replay rules act on. The rules themselves: ``reference/`` (our
reference_model/), ``autocast`` (the reference model under torch.autocast) and ``hf/<family>``
(transformers' classes, each rule naming the code it mirrors). The term functions
(estimator/terms/) and the walkers (estimator/replay/) look rules up by kind and never import a
rule module; the registry imports them on the first lookup. A new implementation or family
adds a module here and its name to ``registry.PROVIDERS``.
"""
