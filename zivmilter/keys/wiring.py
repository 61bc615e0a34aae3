"""The milter's KeyFinder: the organization's key store and the discovery sources (WKD,
OPENPGPKEY, SMIMEA: transport/keyfind.py), in `encryption.sources` order, judged against
`encryption.smime.trust_store`, cached for `encryption.cache_ttl`."""

from __future__ import annotations

from collections.abc import Mapping

from zivmilter.core.config import Config
from zivmilter.core.keys import CandidateSource, KeySource
from zivmilter.keys import judge
from zivmilter.keys.finder import SourcesKeyFinder
from zivmilter.keys.keystore import KeystoreSource
from zivmilter.store.interfaces import RecipientKeys
from zivmilter.transport.keyfind import network_sources
from zivmilter.transport.resolver import Resolver


def discovery_sources(cfg: Config) -> dict[KeySource, CandidateSource]:
    """The network sources (WKD, OPENPGPKEY, SMIMEA: transport/keyfind.py), through the
    prober's validating resolver, each behind its cache."""
    enc = cfg.encryption
    return network_sources(
        Resolver(cfg.transport.resolver),
        cache_ttl=enc.cache_ttl,
        timeout=enc.lookup_timeout,
        wkd_ca_file=enc.wkd.ca_file,
        wkd_max_bytes=enc.wkd.max_bytes,
    )


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
