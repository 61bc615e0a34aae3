"""The end-of-message use case: from what the MTA told the milter (a Transaction) to the changes
it applies (a Plan), with the message stored, notifications built and copies re-injected.

The milter adapter (mta/) fills a Transaction and applies the Plan; nothing here knows pymilter.
"""

from __future__ import annotations

from zivmilter.gateway.gateway import Gateway
from zivmilter.gateway.transaction import Plan, Transaction

__all__ = ["Gateway", "Plan", "Transaction"]
