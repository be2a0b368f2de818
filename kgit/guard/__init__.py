"""The rules every hook and ``kgit check`` share (``invariants``: releases as state, refs, tag
names), and the thin entry points that apply them: pre-commit, pre-merge-commit and pre-push
(``client_hooks``) and a bare repository's pre-receive (``server``)."""
