"""The pure core: the decision (SPEC 3) and every value it is made of, from the configuration and
the directive headers to the facts it asks. Nothing here does I/O (an import-linter contract).
"""
