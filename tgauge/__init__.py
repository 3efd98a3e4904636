"""tgauge: the application (CLI, validation runs, capacity planning, reports)."""

__version__ = "0.1.0"
