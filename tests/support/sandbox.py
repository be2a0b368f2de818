"""The attacks' world: a bare ``origin.git`` guarded by kgit's pre-receive hook with a DVC folder
remote, into which ``ana`` pushed real releases of a tiny Keras model, and ``bob``'s clone of it.

``build_world`` makes it once (releasing is the expensive part); ``Sandbox.copy_of`` copies it for
each attack, much more cheaply, and runs git there as ana or bob, each with their own identity and
dates that count up (the same steps give the same object ids). Every command that changes something
goes to the sandbox's transcript, so a failing case reads as the commands a person would type.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support.invariant import Oracle, Release, plain_git, refs
from support.world import carry_validation, point_dvc_remote

WHO = ("ana", "bob")
IDENTITY = {"ana": ("Ana Lyst", "ana@team.invalid"), "bob": ("Bob Ops", "bob@team.invalid")}
FIRST_DATE = 1_800_000_000  # commit and tagger dates count up from here: the same steps, the same ids


# -- the world, built once --------------------------------------------------------------------------
def build_world(base: Path, model) -> Path:  # type: ignore[no-untyped-def]
    """``base`` holds origin.git (guarded, ``--dvc-remote store``), store/, ana/ and bob/.
    Released and pushed through the real hooks: m@v1 (keras and h5), m@v2 and n@v1 (keras), m@v1
    promoted to prod; branches main, dev (m@v1 plus a commit) and old (before any release)."""
    import kgit as api

    base.mkdir(parents=True, exist_ok=True)
    origin, store, ana = base / "origin.git", base / "store", base / "ana"
    run(base, "git", "init", "-q", "--bare", "--initial-branch=main", str(origin))
    must(run(base, sys.executable, "-m", "kgit", "server", "install", str(origin), "--dvc-remote", str(store)))
    ana.mkdir()
    run(ana, "git", "init", "-q", "--initial-branch=main")
    (ana / "train.py").write_text("print('train')\n")
    run(ana, "git", "add", "train.py")
    run(ana, "git", "commit", "-q", "-m", "training code")
    run(ana, "git", "remote", "add", "origin", str(origin))
    must(run(ana, "git", "push", "-q", "origin", "main:old"))
    api.init(ana, remote=str(store))
    api.release(model, "m", formats=["keras", "h5"], repo=ana)
    run(ana, "git", "branch", "dev")
    api.release(model, "m", formats=["keras"], repo=ana)
    api.release(model, "n", formats=["keras"], repo=ana)
    api.promote("m@v1", "prod", repo=ana)
    (ana / "notes.txt").write_text("after the releases\n")
    run(ana, "git", "add", "notes.txt")
    run(ana, "git", "commit", "-q", "-m", "notes")
    must(run(ana, "git", "push", "-q", "origin", "main", "refs/tags/m#prod#1"))  # the hook uploads
    run(ana, "git", "checkout", "-q", "dev")
    (ana / "dev.txt").write_text("work in progress\n")
    run(ana, "git", "add", "dev.txt")
    run(ana, "git", "commit", "-q", "-m", "dev work")
    must(run(ana, "git", "push", "-q", "origin", "dev"))
    run(ana, "git", "checkout", "-q", "main")
    must(run(base, "git", "clone", "-q", str(origin), str(base / "bob")))
    must(run(base / "bob", sys.executable, "-m", "kgit", "hooks", "install"))
    model.save(base / "model.keras")  # what a later `kgit release --from` releases again
    return base


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(args),
        cwd=cwd,
        capture_output=True,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def must(proc: subprocess.CompletedProcess[bytes]) -> None:
    if proc.returncode != 0:
        raise AssertionError(f"{shlex.join(map(str, proc.args))} failed: {proc.stderr.decode(errors='replace')}")


# -- one attack's copy of the world ------------------------------------------------------------------
@dataclass
class Sandbox:
    base: Path
    oracle: Oracle
    transcript: list[str] = field(default_factory=list)
    pushes: int = 0
    accepted: int = 0
    clock: int = 0
    released_here: list[str] = field(default_factory=list)  # tags `kgit release` made in this attack
    last_push_stderr: str = ""

    @classmethod
    def copy_of(cls, world: Path, dest: Path, oracle: Oracle) -> Sandbox:
        shutil.copytree(world, dest, symlinks=True)
        box = cls(dest, Oracle(dict(oracle.releases)))
        for who in WHO:
            run(box.clone(who), "git", "remote", "set-url", "origin", str(box.origin))
            point_dvc_remote(box.clone(who), box.store)  # the copy's own DVC remote
            carry_validation(world / who, box.clone(who))  # what each validated stays validated
        run(box.origin, "git", "config", "kgit.dvcRemote", str(box.store))
        return box

    @property
    def origin(self) -> Path:
        return self.base / "origin.git"

    @property
    def store(self) -> Path:
        return self.base / "store"

    def clone(self, who: str) -> Path:
        return self.base / who

    # -- running git as a teammate ----------------------------------------------------------------
    def env(self, who: str) -> dict[str, str]:
        self.clock += 1
        name, email = IDENTITY[who]
        date = f"{FIRST_DATE + self.clock} +0000"
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_DATE": date,
        }

    @contextlib.contextmanager
    def acting_as(self, who: str) -> Iterator[None]:
        """In this process, as ``who`` (identity and the next date): for kgit's Python API, whose git
        commands see this process's environment. Cheaper than a `kgit` process, which imports
        TensorFlow again."""
        extra = self.env(who)
        saved = {key: os.environ.get(key) for key in extra}
        os.environ.update(extra)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def git(self, who: str, *args: str, stdin: bytes | None = None, shown: str | None = None) -> str:
        """Run ``git ARGS`` in ``who``'s clone, recorded in the transcript; its stdout (failures are
        part of the game: a merge may conflict, a rebase may stop)."""
        proc = run(self.clone(who), "git", *args, env=self.env(who), stdin=stdin)
        line = f"{who}$ {shown or shlex.join(('git', *args))}"
        self.transcript.append(line if proc.returncode == 0 else f"{line}   # exit {proc.returncode}")
        return proc.stdout.decode("utf-8", "surrogateescape").strip()

    def ask(self, who: str, *args: str) -> str:
        """Read-only git in ``who``'s clone (not recorded: it changes nothing)."""
        return plain_git(self.clone(who), *args, check=False).strip()

    def write(self, who: str, path: str, text: str, shown: str | None = None) -> None:
        """Write a file in ``who``'s work tree (``shown``: the shell command that does the same)."""
        file = self.clone(who) / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        self.transcript.append(f"{who}$ {shown or f'printf %s {shlex.quote(text)} > {path}'}")

    def push(self, who: str, *args: str) -> bool:
        """``git push ARGS`` to origin; True if accepted."""
        proc = run(self.clone(who), "git", "push", *args, env=self.env(who))
        self.pushes += 1
        self.accepted += proc.returncode == 0
        self.last_push_stderr = proc.stderr.decode("utf-8", "replace")
        verdict = "accepted" if proc.returncode == 0 else "refused"
        self.transcript.append(f"{who}$ {shlex.join(('git', 'push', *args))}   # {verdict}")
        return proc.returncode == 0

    def push_with(self, who: str, flags: PushFlags, *refspecs: str) -> bool:
        return self.push(who, *flags.args(), "origin", *refspecs)

    # -- what is there ----------------------------------------------------------------------------
    def branches(self) -> list[str]:
        return sorted(r[len("refs/heads/") :] for r in refs(self.origin, "refs/heads"))

    def releases(self) -> list[Release]:
        return [self.oracle.releases[t] for t in sorted(self.oracle.releases)]

    def released_paths(self) -> list[tuple[Release, str, str]]:
        return [(rel, path, blob) for rel in self.releases() for path, blob in rel.files]

    def tag_message(self, tag: str) -> bytes:
        raw = subprocess.run(
            ["git", "cat-file", "tag", f"refs/tags/{tag}"], cwd=self.origin, capture_output=True
        ).stdout
        return raw.partition(b"\n\n")[2]

    def checkout(self, who: str, pick: int, local: bool = False) -> str:
        """Fetch, then put ``who`` on one of origin's branches (its name): a fresh copy of origin's,
        or with ``local`` the clone's own branch of that name as earlier steps left it (commits
        that a refused push did not send included); on a new orphan ``main`` if origin has none."""
        self.ask(who, "rebase", "--abort")
        self.git(who, "fetch", "-q", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*")
        self.ask(who, "reset", "-q", "--hard")
        self.ask(who, "clean", "-qfd", "-e", ".dvc/config.local")  # the copy's own DVC remote stays
        names = self.branches()
        if not names:
            self.git(who, "checkout", "-q", "-f", "--orphan", "main")
            return "main"
        name = names[pick % len(names)]
        if local and self.rev(who, f"refs/heads/{name}"):
            self.git(who, "checkout", "-q", "-f", name)
        else:
            self.git(who, "checkout", "-q", "-f", "-B", name, f"refs/remotes/origin/{name}")
        return name

    def commit(self, who: str, message: str, *extra: str) -> None:
        self.git(who, "commit", "-q", "--no-verify", "--allow-empty", "-m", message, *extra)

    def rev(self, who: str, spec: str) -> str:
        return self.ask(who, "rev-parse", "--verify", "-q", spec)


@dataclass(frozen=True)
class PushFlags:
    force: bool = False
    no_verify: bool = True  # the client hooks are the attacker's own: skipping them is the usual case

    def args(self) -> list[str]:
        return [*(["--force"] if self.force else []), *(["--no-verify"] if self.no_verify else [])]
