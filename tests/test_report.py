"""``kgit report``: the static registry site, opened in a real headless Chromium (Debian's package,
driven by playwright): rows, charts, hover text, links between pages, no request leaving the
machine, no console errors, a screenshot. The releases are real (tiny Keras models, real DVC)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlparse

import pytest
from conftest import git, kgit, new_repo, snapshot

import kgit as api
from kgit.registry.catalog import tag_message
from kgit.store.git_ops import Repo

XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
# (val.accuracy, val.loss) of circle v1..v4; .kgit/gates.yaml says lower val.loss is better
METRICS = [(0.80, 0.50), (0.85, 0.45), (0.90, 0.40), (0.88, 0.30)]
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def registry_repo(tmp_path_factory: pytest.TempPathFactory, plain_model: Any) -> Path:
    """circle v1..v4 with metrics (v1 deprecated, v2 in prod, v3 in staging; notes with markup),
    other v1 without metrics, and a forged tag circle@v0.0.9 whose message says another version."""
    base = tmp_path_factory.mktemp("report")
    repo = new_repo(base, "train.py", "print('train')\n")
    api.init(repo, remote=str(base / "remote"))
    (repo / ".kgit").mkdir(exist_ok=True)
    (repo / ".kgit" / "gates.yaml").write_text("metrics:\n  val.loss: min\n")
    git(repo, "add", ".kgit/gates.yaml")
    git(repo, "commit", "-q", "-m", "val.loss: lower is better")
    for i, (acc, loss) in enumerate(METRICS, start=1):
        api.release(
            plain_model,
            "circle",
            formats=["keras"],
            repo=repo,
            dataset_id=f"circle-{i}",
            hyperparams={"lr": 0.01 * i, "units": 8},
            metrics={"val": {"accuracy": acc, "loss": loss}},
            notes=XSS if i == 4 else None,
        )
    api.release(plain_model, "other", formats=["keras"], repo=repo)
    api.promote("circle@v2", "prod", note=XSS, repo=repo)
    api.promote("circle@v3", "staging", repo=repo)
    api.deprecate("circle@v1", note="trained on leaked data", repo=repo)
    summary = json.loads(git(repo, "tag", "-l", "--format=%(contents)", "circle@v2.0.0").split("kgit-release: ")[1])
    forged = tag_message("circle", "v99", {k: v for k, v in summary.items() if k not in ("name", "version")})
    subprocess.run(
        ["git", "tag", "-a", "circle@v0.0.9", "-F", "-", git(repo, "rev-parse", "HEAD")],
        cwd=repo,
        input=forged,
        text=True,
        check=True,
        capture_output=True,
    )
    return repo


@pytest.fixture(scope="module")
def site(registry_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("site") / "kgit-report"
    proc = kgit(registry_repo, "report", "--out", str(out), "--json", check=True)
    return out, json.loads(proc.stdout)


class Browser:
    """One page in headless Chromium that records every request, console error and page error."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"failed request: {r.url}"))
        page.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = route.request.url
        self.requests.append(url)
        if url.startswith("file://"):
            route.continue_()
        else:  # never let anything leave the machine, even if the test is about to fail
            route.abort()

    def open(self, path: Path) -> None:
        self.page.goto(path.as_uri(), wait_until="load")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `bash scripts/setup.sh --test` (apt package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Browser]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    yield Browser(context.new_page())
    context.close()


def _cells(b: Browser, selector: str) -> list[list[str]]:
    return b.page.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
    )


@pytest.mark.slow
def test_model_page_in_chromium(
    site: tuple[Path, dict[str, Any]], browser: Browser, registry_repo: Path, tmp_path: Path
) -> None:
    out, result = site
    assert result["versions"] == 5 and [m["name"] for m in result["models"]] == ["circle", "other"]
    browser.open(out / "models" / "circle.html")
    page = browser.page
    rows = _cells(browser, "#versions")
    header = page.eval_on_selector_all("#versions thead th", "hs => hs.map(h => h.innerText.trim())")
    assert header[:6] == ["version", "stages", "created", "who", "source commit", "dataset"]
    assert header[-3:] == ["size", "signed", "validated"]
    assert header[6:8] == ["val.loss", "val.accuracy"]  # the one with a declared direction first
    # newest first; the forged tag is listed, marked invalid, without a page
    assert [r[0] for r in rows] == ["v4", "v3", "v2", "v1", "v0.0.9"]
    by_version = {r[0]: r for r in rows}
    assert by_version["v2"][1] == "prod" and by_version["v3"][1] == "staging"
    assert by_version["v1"][1].split(None, 1) == ["deprecated", "trained on leaked data"]  # the note beside it
    assert by_version["v4"][5] == "circle-4" and by_version["v4"][6:8] == ["0.3", "0.88"]
    assert by_version["v4"][-2] == "no" and by_version["v4"][-1].startswith("here")
    assert "invalid" in by_version["v0.0.9"][-1] and "v99" in by_version["v0.0.9"][-1]
    assert page.locator("#versions tr[data-version='v0.0.9'] a").count() == 0
    grey = page.eval_on_selector("#versions tr.deprecated td", "td => getComputedStyle(td).color")
    black = page.eval_on_selector("#versions tr[data-version='v4'] td", "td => getComputedStyle(td).color")
    assert grey == "rgb(154, 154, 154)" and grey != black
    # a chart per metric, drawn (SVG), each point a version, the stage holders starred
    charts = page.locator("#metric-charts .js-plotly-plot")
    assert charts.count() == 2
    assert page.eval_on_selector_all("#metric-charts .chart", "cs => cs.map(c => c.dataset.metric)") == [
        "val.accuracy",
        "val.loss",
    ]
    first = "#metric-charts .chart[data-metric='val.accuracy']"
    assert page.locator(f"{first} .main-svg").count() >= 1
    assert page.locator(f"{first} .scatterlayer .trace").nth(0).locator("path.point").count() == 4
    stars = page.locator(f"{first} .scatterlayer .trace").nth(1)
    assert stars.locator("path.point").count() == 2
    assert sorted(stars.locator("text").all_text_contents()) == ["prod", "staging"]
    # hovering v3's point shows its version, its source commit and its value
    v3 = api.show("circle", "v3", repo=registry_repo).metadata
    page.locator(f"{first} .scatterlayer .trace").nth(0).locator("path.point").nth(2).hover(force=True)
    page.wait_for_selector(f"{first} .hoverlayer .hovertext", timeout=5000)
    hover = " ".join(page.locator(f"{first} .hoverlayer .hovertext").all_text_contents())
    assert "v3" in hover and (v3.git.commit or "")[:8] in hover and "0.9" in hover, hover
    # the stage timeline: who promoted what, when, with the note as text
    timeline = _cells(browser, "#timeline")
    events = [(r[1], r[2], r[3]) for r in timeline]
    assert ("promoted", "v2", "prod") in events and ("promoted", "v3", "staging") in events
    assert ("deprecated", "v1", "") in events and ("released", "v4", "") in events
    assert page.locator("#stage-chart .js-plotly-plot").count() == 1
    page.screenshot(path=str(tmp_path / "model.png"), full_page=True)
    assert (tmp_path / "model.png").stat().st_size > 20_000
    assert browser.errors == []
    assert all(u.startswith("file://") for u in browser.requests), browser.requests


@pytest.mark.slow
def test_every_link_resolves_offline(site: tuple[Path, dict[str, Any]], browser: Browser) -> None:
    """Walk every page from index.html by its links: each resolves to a page of the site, and no
    page asks for anything outside it, or logs an error."""
    out, _ = site
    todo, seen = [(out / "index.html").as_uri()], set()
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        response = browser.page.goto(url, wait_until="load")
        assert response is not None and response.ok, url
        assert browser.page.title().endswith("kgit registry"), url
        for href in browser.page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)"):
            target = urldefrag(href)[0]
            assert target.startswith("file://"), f"{url} links outside the site: {href}"
            path = Path(urlparse(target).path)
            assert path.is_file() and out in path.parents, f"{url} links to a missing page: {href}"
            todo.append(target)
    pages = {Path(urlparse(u).path).relative_to(out).as_posix() for u in seen}
    assert pages == {
        "index.html",
        "models/circle.html",
        "models/other.html",
        "models/circle/v1.html",
        "models/circle/v2.html",
        "models/circle/v3.html",
        "models/circle/v4.html",
        "models/other/v1.html",
    }
    assert browser.errors == []
    assert all(u.startswith("file://") for u in browser.requests), [
        u for u in browser.requests if not u.startswith("file://")
    ]
    assert any(u.endswith("assets/plotly.min.js") for u in browser.requests)


@pytest.mark.slow
def test_version_page_compares_with_previous_and_prod(
    site: tuple[Path, dict[str, Any]], browser: Browser, registry_repo: Path
) -> None:
    out, _ = site
    browser.open(out / "models" / "circle" / "v4.html")
    page = browser.page
    meta = dict(
        (r[0], r[1])
        for r in page.eval_on_selector_all(
            "#metadata tr", "rows => rows.map(r => [r.cells[0].innerText, r.cells[1].innerText])"
        )
    )
    assert meta["tag"] == "circle@v4.0.0" and meta["dataset"] == "circle-4"
    from kgit.core.sizes import human_size

    keras_info = api.show("circle", "v4", repo=registry_repo).release.formats["keras"]
    # what the version added to storage, beside its size
    assert meta["formats"] == f"keras ({human_size(keras_info['size'])}, {human_size(keras_info['new_bytes'])} new)"
    shown = api.show("circle", "v4", repo=registry_repo).metadata
    assert shown.git.commit is not None and shown.source is not None
    head = page.eval_on_selector_all("#metrics thead th", "hs => hs.map(h => h.innerText.trim())")
    assert head == ["metric", "v4", "previous: v3", "change", "prod: v2", "change"]
    metrics = {r[0].split()[0]: r[1:] for r in _cells(browser, "#metrics")}
    assert metrics["val.accuracy"] == ["0.88", "0.9", "-0.02", "0.85", "+0.03"]
    assert metrics["val.loss"] == ["0.3", "0.4", "-0.1", "0.45", "-0.15"]
    verdicts = page.eval_on_selector_all("#metrics tbody .delta", "ds => ds.map(d => d.className)")
    # accuracy: worse than v3, better than v2; loss (lower is better): better than both
    assert verdicts == ["delta worse", "delta better", "delta better", "delta better"]
    params = {r[0]: r[1:] for r in _cells(browser, "#hyperparameters")}
    assert params["lr"] == ["0.04", "0.03", "0.02"] and params["units"] == ["8", "8", "8"]
    changed = page.eval_on_selector_all("#hyperparameters td.changed", "ts => ts.map(t => t.innerText)")
    assert changed == ["0.03", "0.02"]
    signature = _cells(browser, "#signature")
    assert signature[0][:2] == ["input", "x"] and signature[0][3] == "float32"
    commands = page.inner_text("#commands")
    assert "kgit get circle@v4" in commands and 'kgit.load("circle", "v4")' in commands
    assert "--rev v4.0.0" in commands
    # the note is shown as the text it is: no script ran, no image was requested
    assert page.inner_text("#notes") == XSS
    assert page.evaluate("window.__pwned") is None
    # v3's previous version is the prod holder: compared once
    browser.open(out / "models" / "circle" / "v3.html")
    head = page.eval_on_selector_all("#metrics thead th", "hs => hs.map(h => h.innerText.trim())")
    assert head == ["metric", "v3", "previous and prod: v2", "change"]
    assert page.locator("table.changes").count() == 1
    assert browser.errors == [] and all(u.startswith("file://") for u in browser.requests)


@pytest.mark.slow
def test_markup_in_notes_is_escaped(site: tuple[Path, dict[str, Any]]) -> None:
    out, _ = site
    for page in ("models/circle.html", "models/circle/v4.html", "index.html"):
        html = (out / page).read_text()
        assert "<script>window.__pwned" not in html and "onerror=" not in html.replace("onerror=&#34;", "")
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in (out / "models/circle/v4.html").read_text()
    assert "&lt;script&gt;window.__pwned" in (out / "models/circle.html").read_text()  # the promote note


@pytest.mark.slow
def test_report_reads_git_alone(registry_repo: Path, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom kgit.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'dvc', 'h5py') if m in sys.modules)\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    out = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-c", code, "report", "circle", "--out", str(out)],
        cwd=registry_repo,
        capture_output=True,
        text=True,
    )
    assert "HEAVY=\n" in proc.stderr, proc.stderr
    assert (out / "models" / "circle" / "v4.html").is_file()
    assert not (out / "models" / "other.html").exists()  # only the model asked for
    assert "wrote" in proc.stderr and "1 model and 4 versions" in proc.stderr


@pytest.mark.slow
def test_rerun_replaces_the_site_whole(registry_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    kgit(registry_repo, "report", "--out", str(out), check=True)
    (out / "stale.html").write_text("from an older report")
    first = api.report(["other"], out=out, repo=registry_repo)
    assert not (out / "stale.html").exists() and not (out / "models" / "circle.html").exists()
    assert (out / "models" / "other" / "v1.html").is_file() and Path(first.index) == out / "index.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temp or old folder left beside it
    # only the metrics' pages use plotly: a site without charts does not carry it
    assert not (out / "assets" / "plotly.min.js").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["foreign folder", "file", "unknown model", "bad name", "missing parent"])
def test_bad_input_changes_nothing(registry_repo: Path, tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    args: list[str] = []
    if case == "foreign folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "file":
        out.write_text("mine")
    elif case == "unknown model":
        args = ["nosuch"]
    elif case == "bad name":
        args = ["../x"]
    else:
        out = tmp_path / "missing" / "out"
    before_out = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    before_repo = snapshot(registry_repo)
    proc = kgit(registry_repo, "report", *args, "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kgit: error: ") and "Traceback" not in proc.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before_out
    assert snapshot(registry_repo) == before_repo
    if case == "foreign folder":
        assert (out / "notes.txt").read_text() == "mine"
    if case == "file":
        assert out.read_text() == "mine"


@pytest.mark.slow
def test_open_starts_the_browser_on_the_index(registry_repo: Path, tmp_path: Path) -> None:
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "browser.sh"
    fake.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    fake.chmod(0o755)
    out = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "kgit", "report", "other", "--out", str(out), "--open"],
        cwd=registry_repo,
        capture_output=True,
        text=True,
        env={**os.environ, "BROWSER": str(fake)},
    )
    assert proc.returncode == 0, proc.stderr
    assert opened.read_text().strip() == (out / "index.html").as_uri()


def test_show_files_reads_many_files_in_one_call(git_repo: Path) -> None:
    (git_repo / "a.txt").write_text("first\n")
    (git_repo / "b.bin").write_bytes(b"\x00\x01\n\n" * 1000)
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-q", "-m", "two files")
    old = git(git_repo, "rev-parse", "HEAD")
    (git_repo / "a.txt").write_text("second\nwith two lines")
    git(git_repo, "commit", "-q", "-am", "change a")
    repo = Repo(git_repo)
    got = repo.show_files(
        [
            (old, "a.txt"),
            ("HEAD", "a.txt"),
            ("HEAD", "missing.txt"),
            (old, "b.bin"),
            ("HEAD", "README.md"),
            ("nosuchrev", "a.txt"),
            (old, "."),
        ]
    )
    assert got[(old, "a.txt")] == "first\n"
    assert got[("HEAD", "a.txt")] == "second\nwith two lines"
    assert got[("HEAD", "missing.txt")] is None and got[("nosuchrev", "a.txt")] is None
    assert got[(old, "b.bin")] == "\x00\x01\n\n" * 1000
    assert got[("HEAD", "README.md")] == "a project\n"
    assert got[(old, ".")] is None  # a tree, not a file
    assert repo.show_files([]) == {}
    with pytest.raises(ValueError):
        repo.show_files([("HEAD", "a\nb")])


def test_empty_registry(kgit_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = json.loads(kgit(kgit_repo, "report", "--out", str(out), "--json", check=True).stdout)
    assert result["models"] == [] and result["versions"] == 0
    assert result["url"] == (out / "index.html").as_uri()
    html = (out / "index.html").read_text()
    assert "no releases yet" in html and sorted(p.name for p in out.iterdir()) == [
        ".kgit-report",
        "assets",
        "index.html",
    ]
