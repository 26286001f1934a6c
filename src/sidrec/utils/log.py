"""sidrec's logger. Library functions report progress through ``logging`` (logger "sidrec", silent unless
the application configures it); the CLI installs a rich handler at INFO. Functions keep an optional
``log`` callable for callers that want the lines themselves (tests pass one that drops them)."""

from __future__ import annotations

import logging

from rich.logging import RichHandler

LOGGER = logging.getLogger("sidrec")
LOGGER.addHandler(logging.NullHandler())


def info(msg: str) -> None:
    """The default ``log`` of every stage: one INFO record on the "sidrec" logger."""
    LOGGER.info(msg)


def use_rich(console) -> None:
    """Route the "sidrec" logger to a rich console (the CLI), once."""
    if any(getattr(h, "_sidrec", False) for h in LOGGER.handlers):
        return

    h = RichHandler(console=console, show_time=False, show_level=False, show_path=False, markup=False)
    h._sidrec = True
    LOGGER.addHandler(h)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
