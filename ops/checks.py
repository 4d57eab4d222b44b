"""A check, the way ``barman check`` has them: a name, a result, what was seen, a hint, and
whether it is critical. ``inv status``, promotion's preflight, ``inv verify``-style checks and
the drill all speak in these; the writers (text, JSON) live with their commands.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One check's outcome. ``detail`` says what was seen; ``hint``, what to do if it failed."""

    name: str
    ok: bool
    detail: str
    hint: str = ""
    critical: bool = True

    @property
    def failed(self) -> bool:
        """A failed critical check: it makes a command's exit code non-zero."""
        return self.critical and not self.ok
