"""``kgit demo``: the main job on a built-in example, narrated step by step.

Makes a scratch repository with a small training script, a params.yaml and promotion gates, sets it
up with ``kgit init`` and a local-folder DVC remote, releases v1, changes a hyperparameter, releases
v2 (each with metrics measured on the released artifact by ``--evaluate``), lists, shows and diffs
the releases, promotes the better one to prod past the gates (the other is refused), pushes to a bare "origin" (the pre-push hook validates and uploads
the data), and finally plays a teammate: clone, list, fetch one version, validate and load it. Every step runs the real ``kgit``/``git`` command it prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from kgit.core import layout
from kgit.core.errors import KgitError

TRAIN_PY = textwrap.dedent('''\
    """A small, seeded Keras model: classify points inside/outside a circle (seconds on a CPU)."""
    import keras
    import numpy as np
    import yaml


    def make_data(n=512, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1, 1, size=(n, 2)).astype("float32")
        y = (np.sum(x * x, axis=1) < 0.5).astype("float32")[:, None]
        return x, y


    def train():
        params = yaml.safe_load(open("params.yaml"))
        keras.utils.set_random_seed(params["seed"])
        model = keras.Sequential([
            keras.Input((2,), name="point"),
            keras.layers.Dense(params["units"], activation="relu"),
            keras.layers.Dense(1, activation="sigmoid", name="inside"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(params["learning_rate"]),
                      loss="binary_crossentropy", metrics=["accuracy"])
        x, y = make_data()
        model.fit(x, y, epochs=params["epochs"], batch_size=32, verbose=0)
        return model


    def evaluate(model):
        """Metrics on points the model never saw (kgit calls this on the model reloaded from the release)."""
        scores = model.evaluate(*make_data(256, seed=1), verbose=0, return_dict=True)
        return {"holdout": {"accuracy": scores["accuracy"], "loss": scores["loss"]}}
''')

GATES_YAML = textwrap.dedent("""\
    # Promotion gates: every promotion (kgit promote, and stage tags pushed any other way) must pass them.
    metrics:
      holdout.loss: min          # lower is better (other metrics: higher is better)
    stages:
      prod:
        require: ["holdout.accuracy >= 0.9"]
        require_better: [holdout.accuracy]   # better than the version in prod now
""")

_LOAD_AND_COMPARE = textwrap.dedent("""\
    import numpy as np
    import kgit
    model = kgit.load("circle", "v2", format="keras")  # compiled, optimizer state restored
    folder = "{folder}"
    x = np.load(f"{{folder}}/{inputs}")["point"]
    want = np.load(f"{{folder}}/{outputs}")["output_0"]
    got = np.asarray(model(x, training=False))
    print(f"loaded {{model.name}}: {{model.count_params()}} parameters, optimizer step {{int(model.optimizer.iterations)}}; "
          f"max abs diff from the outputs recorded at release: {{np.max(np.abs(got - want)):.2g}}")
""").format(
    folder=layout.release_dir("circle", "keras", "v2"),
    inputs=layout.REFERENCE_INPUTS_FILE,
    outputs=layout.REFERENCE_OUTPUTS_FILE,
)

# `kgit release` of the demo's model: both formats, the parameters file, the dataset id, measured on held-out data
RELEASE_CIRCLE = [
    "kgit",
    "release",
    "circle",
    "--from",
    "train:train",
    "--format",
    "savedmodel",
    "--format",
    "keras",
    "--params",
    "params.yaml",
    "--dataset-id",
    "circle-512-seed0",
    "--evaluate",
    "train:evaluate",
]
PARAMS = "seed: 7\nunits: 16\nlearning_rate: {lr}\nepochs: 5\n"


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _run(console: Any, cmd: list[str], cwd: Path, show: bool = True) -> str:
    shown = " ".join(cmd)
    if show:
        console.print(f"[bold cyan]$ {shown}[/bold cyan]")
    exe = [sys.executable, "-m", "kgit", *cmd[1:]] if cmd[0] == "kgit" else cmd
    env = {**os.environ, "COLUMNS": str(max(console.width, 120))}
    proc = subprocess.run(exe, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    output = (proc.stdout + proc.stderr).rstrip()
    if show and output:
        console.print(textwrap.indent(output, "  "), markup=False)
    if proc.returncode != 0:
        raise KgitError(
            f"demo step `{shown}` failed (exit {proc.returncode}): {output.splitlines()[-1] if output else ''}"
        )
    return proc.stdout


def _refused(console: Any, cmd: list[str], cwd: Path, otherwise: str) -> None:
    """Run a step that must fail, and show its one-line refusal."""
    console.print(f"[bold cyan]$ {' '.join(cmd)}[/bold cyan]")
    proc = subprocess.run(
        [sys.executable, "-m", "kgit", *cmd[1:]], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    console.print(
        textwrap.indent(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "", "  "), markup=False
    )
    if proc.returncode == 0:
        raise KgitError(f"demo: {otherwise}")


def run_demo(directory: Path | None = None) -> Path:
    """Run the demo in ``directory`` (created; must be empty if it exists) and return the repo path."""
    base = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="kgit-demo-"))
    if base.exists() and any(base.iterdir()):
        raise KgitError(f"{base} is not empty: give a new or empty folder for the demo")
    base.mkdir(parents=True, exist_ok=True)
    repo, remote = base / "project", base / "dvc-remote"
    repo.mkdir()
    console = _console()

    def step(n: int, text: str) -> None:
        console.print(f"\n[bold]{n}. {text}[/bold]")

    step(1, f"A git repository with a training script, its hyperparameters and promotion gates ({repo})")
    (repo / "train.py").write_text(TRAIN_PY)
    (repo / "params.yaml").write_text(PARAMS.format(lr=0.01))
    (repo / ".kgit").mkdir()
    (repo / ".kgit" / "gates.yaml").write_text(GATES_YAML)
    env_ok = (
        os.environ.get("GIT_AUTHOR_NAME")
        or subprocess.run(["git", "config", "user.name"], capture_output=True, text=True).stdout.strip()
    )
    _run(console, ["git", "init", "-q", "-b", "main"], repo)
    if not env_ok:
        _run(console, ["git", "config", "user.name", "kgit demo"], repo, show=False)
        _run(console, ["git", "config", "user.email", "demo@kgit.invalid"], repo, show=False)
    _run(console, ["git", "add", "train.py", "params.yaml", ".kgit/gates.yaml"], repo)
    _run(console, ["git", "commit", "-q", "-m", "Training code"], repo)

    step(2, "Set the repository up for kgit, with a local folder as the DVC remote")
    _run(console, ["kgit", "init", "--remote", str(remote)], repo)

    step(
        3,
        "Train (seeded, a few seconds) and release v1: save, validate in a fresh process (where --evaluate "
        "measures the reloaded model on held-out data), dvc add, commit, tag",
    )
    _run(console, [*RELEASE_CIRCLE, "--note", "first model"], repo)

    step(4, "Change a hyperparameter (learning_rate 0.01 -> 0.05), commit, and release v2")
    (repo / "params.yaml").write_text(PARAMS.format(lr=0.05))
    _run(console, ["git", "commit", "-q", "-am", "Raise the learning rate"], repo)
    _run(console, RELEASE_CIRCLE, repo)

    step(5, "Releases are tags (GTO's grammar); metadata and metrics are readable from git alone")
    _run(
        console,
        ["kgit", "list", "--metric", "holdout.accuracy", "--metric", "holdout.loss", "--sort", "holdout.accuracy"],
        repo,
    )
    _run(console, ["git", "tag", "--list", "circle@*"], repo)
    _run(console, ["kgit", "show", "circle@v2"], repo)
    _run(console, ["kgit", "diff", "circle@v1", "circle@v2"], repo)

    step(
        6, "Promote past the gates in .kgit/gates.yaml: v1 is refused, naming the rule and the numbers; v2 goes to prod"
    )
    _refused(console, ["kgit", "promote", "circle@v1", "prod"], repo, "promoting v1 should have been refused")
    _run(console, ["kgit", "promote", "circle@v2", "prod"], repo)

    step(7, "Publish: `git push` to the team's repository; kgit's pre-push hook validates and uploads the data")
    origin = base / "origin.git"
    _run(console, ["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], base)
    _run(console, ["git", "remote", "add", "origin", str(origin)], repo)
    _run(console, ["git", "push", "-u", "origin", "main"], repo)
    _run(console, ["git", "ls-remote", "--tags", "origin"], repo)

    step(8, "A released version can never be overwritten")
    _refused(
        console,
        ["kgit", "release", "circle", "--from", "train:train", "--version", "v2"],
        repo,
        "re-releasing v2 should have been refused",
    )

    step(9, "Another machine: clone, list (with metrics) before any download, fetch one version, load it, compare")
    clone = base / "teammate"
    _run(console, ["git", "clone", "-q", str(origin), str(clone)], base)
    _run(console, ["kgit", "list", "--metric", "holdout.accuracy"], clone)
    _run(console, ["kgit", "get", "circle@v2"], clone)
    _run(console, ["kgit", "validate", "circle@v2"], clone)
    console.print(
        '[bold cyan]$ python -c \'import kgit; model = kgit.load("circle", "v2", format="keras"); ...\'[/bold cyan]'
    )
    out = _run(console, [sys.executable, "-c", _LOAD_AND_COMPARE], clone, show=False)
    console.print(textwrap.indent(out.rstrip(), "  "), markup=False)

    step(10, "The registry as a static site, from git alone: open it in a browser, or publish it from CI")
    _run(console, ["kgit", "report", "--out", str(base / "report")], repo)

    console.print(
        f"\n[bold green]Done.[/bold green] The demo repository is {repo}, pushed to {origin}; "
        f"the model data is in the DVC remote {remote}."
    )
    return repo
