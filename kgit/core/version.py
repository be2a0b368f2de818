"""kgit's own version: one place, read by the package, the command line, metadata and caches."""

VERSION = "0.1.0"
