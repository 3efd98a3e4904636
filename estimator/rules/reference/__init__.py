"""The rules of our reference model (reference_model/), the fallback of every kind: what its
modules save (``saved``), what its backward does module by module (``backward``), its no-grad
forward (``passes``), and what the model and its step hold besides (``held``). Each names the
reference_model code it mirrors.
"""
