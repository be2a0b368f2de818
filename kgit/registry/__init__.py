"""What releases exist, read from git alone: the tag grammar (``versions``), reading and resolving
releases (``catalog``), the tag cache and what this clone saw, stage events and their counters, gates,
compat records and the environments they are judged against (``compat_records``, ``compat_envs``),
and diffs. Imports neither TensorFlow nor DVC at import time: git-only commands stay fast."""
