"""Whom a clone trusts (``keyring``: keys, endorsements, the signing policy anchored in
``.git/kgit/``) and release signatures (``signing``)."""
