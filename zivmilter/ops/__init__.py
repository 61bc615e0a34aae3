"""Operations: what an admin runs against a live installation (`zivmilter doctor`).

checks.py judges a Postfix configuration as pure data (values in, verdicts out); doctor.py gathers
those values (postconf, postmap) and probes the live parts (milter, listener, store, resolver,
portal). Both sit beside the MTA adapter and the portal, above the store and the transport prober.
"""
