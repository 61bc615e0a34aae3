"""The milter's KeyFinder: the organization's key store and the discovery sources (WKD,
OPENPGPKEY, SMIMEA: transport/keyfind.py), in `encryption.sources` order, judged against
`encryption.smime.trust_store`, cached for `encryption.cache_ttl`."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping

from zivmilter.core.config import Config
from zivmilter.core.keys import CandidateSource, KeySource
from zivmilter.keys import judge
from zivmilter.keys.finder import SourcesKeyFinder
from zivmilter.keys.keystore import KeystoreSource
from zivmilter.store.interfaces import RecipientKeys

log = logging.getLogger(__name__)


def discovery_sources(cfg: Config) -> dict[KeySource, CandidateSource]:
    """The discovery sources, from transport/keyfind.py's `sources(cfg)` where it is installed
    (built apart: issue 26); none otherwise, and the key store alone answers."""
    try:
        keyfind = importlib.import_module("zivmilter.transport.keyfind")
    except ImportError:
        return {}
    make = getattr(keyfind, "sources", None)
    if make is None:
        log.warning("zivmilter.transport.keyfind has no sources(cfg): key discovery is off")
        return {}
    found: dict[KeySource, CandidateSource] = make(cfg)
    return found


def key_finder(
    cfg: Config,
    store: RecipientKeys,
    discovered: Mapping[KeySource, CandidateSource] | None = None,
) -> SourcesKeyFinder:
    sources: dict[KeySource, CandidateSource] = dict(
        discovery_sources(cfg) if discovered is None else discovered
    )
    sources[KeySource.KEYSTORE] = KeystoreSource(store)
    enc = cfg.encryption
    return SourcesKeyFinder(
        sources, enc.sources, judge.validator(enc.smime.trust_store), enc.cache_ttl
    )
