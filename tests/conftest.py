"""Puts tests/ on sys.path (pytest's prepend import mode), so that test modules in every
folder can import the shared fixtures data of tests/hf_tiny.py."""
