"""The tiny Hugging Face configs of the seven families: they ship in the package
(tgauge/hf_tiny.py, run by `tgauge validate --matrix`); the tests import them from here."""

from tgauge.hf_tiny import CONFIGS, DECODERS, FAMILIES

__all__ = ["CONFIGS", "DECODERS", "FAMILIES"]
