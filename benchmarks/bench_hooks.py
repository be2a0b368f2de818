"""kgit's pre-push hook, run directly (``kgit hook pre-push origin URL``, the pushed refs on stdin)
on a repository with ``--versions`` released versions pushed to a bare origin:

  nothing new   against DVC's own pre-push hook (``dvc push`` with nothing to push); and the
                server-side pre-receive hook receiving a plain commit
  one new real release (a ~5 MB model): right after it (validated while released: the cost is the
                upload), and with the local validation record removed (validation + upload),
                against ``kgit validate NAME@VERSION --recheck`` of that version. Every run starts
                from the same state: the DVC remote and kgit's records of what was uploaded and
                validated are put back as they were before the first run.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench_fixtures import MEDIUM, MODEL, Fixtures, dense_model, describe
from bench_util import (
    DVC,
    KGIT,
    CommandFailed,
    Row,
    git,
    run,
    run_capture,
    timed,
    timed_interleaved,
    timing_baseline,
    timing_row,
    tool_env,
)

ZERO = "0" * 40


def nothing_new(fx: Fixtures, runs: int) -> list[Row]:
    repo, origin = fx.hooks()
    versions = fx.hook_versions
    if not (repo / "notes.txt").exists():
        (repo / "notes.txt").write_text("work\n")
        git(repo, "add", "notes.txt")
        git(repo, "commit", "-q", "--no-verify", "-m", "notes")
    stdin = (
        f"refs/heads/main {git(repo, 'rev-parse', 'HEAD')} refs/heads/main {git(repo, 'rev-parse', 'origin/main')}\n"
    )
    env = tool_env()
    shim = repo / ".git" / "hooks" / "pre-push"
    fixture = f"{versions} versions"
    # the server hook receiving that plain commit (run where the objects are: the clone's git dir)
    received = f"{git(repo, 'rev-parse', 'HEAD~1')} {git(repo, 'rev-parse', 'HEAD')} refs/heads/main\n"
    t = timed_interleaved(
        runs,
        {
            "dvc": lambda: run([DVC, "push"], repo, env=env),
            "direct": lambda: run([KGIT, "hook", "pre-push", "origin", str(origin)], repo, stdin, env),
            "shim": lambda: run([str(shim), "origin", str(origin)], repo, stdin, env),
            "server": lambda: run([KGIT, "hook", "pre-receive"], repo / ".git", received, env),
        },
    )
    base = timing_baseline("DVC's pre-push (`dvc push`, nothing to push)", fixture, t["dvc"])
    rows = [
        base,
        timing_row("kgit pre-push, nothing new (`kgit hook pre-push`)", fixture, t["direct"], base),
        timing_row("kgit pre-push, nothing new (the installed shim)", fixture, t["shim"], base),
        timing_row("kgit server pre-receive, a plain commit", fixture, t["server"], base),
    ]
    listing = timed(runs, lambda: run([KGIT, "list"], repo, env=env))
    rows.append(timing_row("`kgit list`", fixture, listing))
    return rows


def _files(folder: Path) -> set[Path]:
    return {Path(d) / f for d, _dirs, names in os.walk(folder) for f in names}


def one_new(fx: Fixtures, runs: int) -> list[Row]:
    import kgit
    from kgit.store import clone_state, dvc_ops
    from kgit.store.git_ops import Repo

    repo, origin = fx.hooks()
    record = kgit.release(dense_model(*MEDIUM, seed=1), MODEL, formats="keras", repo=repo)
    ref = f"{MODEL}@{record.version}"
    fixture = f"{fx.hook_versions} versions + 1 new ({describe(MEDIUM)})"
    stdin = (
        f"refs/heads/main {git(repo, 'rev-parse', 'HEAD')} refs/heads/main {git(repo, 'rev-parse', 'origin/main')}\n"
        f"refs/tags/{record.tag} {git(repo, 'rev-parse', f'refs/tags/{record.tag}')} refs/tags/{record.tag} {ZERO}\n"
    )
    clone = Repo(repo)
    published, validated = (
        clone_state.path(clone, clone_state.PUBLISHED),
        clone_state.path(clone, clone_state.VALIDATED),
    )
    saved = {p: p.read_bytes() if p.exists() else None for p in (published, validated)}
    _name, url = dvc_ops.default_remote(repo)
    remote = Path(str(url))
    before = _files(remote)
    env = tool_env()

    def restore(keep_validation: bool) -> None:
        for path, data in saved.items():
            if data is None or (path == validated and not keep_validation):
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)
        for extra in _files(remote) - before:
            extra.unlink()

    def hook(keep_validation: bool) -> float:
        restore(keep_validation)
        seconds, err = run_capture([KGIT, "hook", "pre-push", "origin", str(origin)], repo, stdin, env)
        # what is measured must be what the row says
        if not _files(remote) - before:
            raise CommandFailed(f"the pre-push hook uploaded nothing for {ref}:\n{err}")
        if ("kgit: validating" in err) == keep_validation:
            state = "validated" if keep_validation else "did not validate"
            raise CommandFailed(
                f"the pre-push hook {state} {ref} (validation record {'kept' if keep_validation else 'removed'}):\n{err}"
            )
        return seconds

    try:
        t = timed_interleaved(
            runs,
            {
                "validate": lambda: run([KGIT, "validate", ref, "--recheck"], repo, env=env),
                "upload": lambda: hook(keep_validation=True),
                "both": lambda: hook(keep_validation=False),
            },
        )
    finally:
        restore(keep_validation=True)
    base = timing_baseline(f"`kgit validate {ref} --recheck`", fixture, t["validate"])
    return [
        base,
        timing_row("kgit pre-push, 1 new release validated at release (upload)", fixture, t["upload"], base),
        timing_row("kgit pre-push, 1 new release, no validation record (validate, upload)", fixture, t["both"], base),
    ]
