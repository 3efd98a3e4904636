"""Entry point of the `tgauge` command: registers each command module on the app."""

from __future__ import annotations

from tgauge.app import app

# Each module registers its commands on `app` at import; none imports torch at import time.
from tgauge.commands import estimate as _estimate  # noqa: F401, E402
from tgauge.commands import fit as _fit  # noqa: F401, E402
from tgauge.commands import presets as _presets  # noqa: F401, E402
from tgauge.commands import profile as _profile  # noqa: F401, E402
from tgauge.commands import report as _report  # noqa: F401, E402
from tgauge.commands import sweep as _sweep  # noqa: F401, E402
from tgauge.commands import validate as _validate  # noqa: F401, E402


def main() -> None:
    app()


if __name__ == "__main__":
    main()
