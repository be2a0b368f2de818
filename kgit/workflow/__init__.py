"""The release lifecycle as operations: ``kgit init`` (project), release, validate, get, the
round trip in a fresh process, promotions and rollbacks (stages) and the built-in example."""
