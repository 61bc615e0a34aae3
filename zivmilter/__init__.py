"""zivmilter: a secure outbound mail gateway that attaches to Postfix or Sendmail as a milter.

The public API is small: the config loader, the facts protocol and the pure policy core.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
