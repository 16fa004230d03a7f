"""Reports from a result store: paper-shaped sections on synthetic store rows, numbers checked against numpy,
PNGs referenced from Markdown and embedded in the HTML (markdown-it-py's rendering of the same Markdown), and a
headless-Chromium screenshot of the HTML."""

from __future__ import annotations

import base64
import csv
import itertools
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertscope import api
from bertscope.cli import main
from bertscope.core.errors import BertscopeError
from bertscope.report import aggregate, format_cell, layer_curves
from bertscope.runs.store import ResultStore
from bertscope.sweep.spec import run_id


@dataclass
class FakeRun:
    """What ResultStore.register needs of a run (the report reads only the store, never the spec)."""

    command: str
    axes: dict[str, Any] | None
    experiment: str
    identity: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    depends_on: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.identity = {**(self.axes or {}), **self.config, **self.identity}
        self.id = run_id(self.command, {"experiment": self.experiment, **self.identity})
        self.options = {**(self.axes or {}), **self.config, "out": f"/tmp/{self.id}"}


def cell(values: list[float]) -> str:
    """Independent formatting of mean ± sample std [95% t interval] (n) with numpy and scipy."""
    from scipy import stats as scipy_stats

    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values.mean():.3f} (n=1)"
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f} [{low:.3f}, {high:.3f}] (n={len(values)})"


def grid(**axes):
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*axes.values())]


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    """A store holding finished runs shaped like both papers' experiments, with random (seeded) metrics."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("report")
    path = folder / "results.db"
    runs: list[tuple[FakeRun, dict[str, float], Any]] = []
    for axes in grid(task=["rte", "mrpc"], layer=[2, 4, 6], seed=[1, 2, 3]):
        runs.append((FakeRun("finetune", axes, "layers"), {"score": float(rng.uniform(0.5, 0.9)),
                                                             "accuracy": float(rng.uniform(0.5, 0.9))}, None))
    for axes in grid(dims=["all", "first:4", "first:16", "random:4", "random:16"], seed=[1, 2]):
        runs.append((FakeRun("finetune", {"task": "sst2", **axes}, "dims"), {"score": float(rng.uniform())}, None))
    for axes in grid(token=["cls", "mean", "max-norm"], task=["rte", "cola"], seed=[1, 2]):
        runs.append((FakeRun("finetune", axes, "tokens"), {"score": float(rng.uniform())}, None))
    for axes in grid(freeze=["none", "encoder"], task=["rte"], seed=[1, 2, 3]):
        runs.append((FakeRun("finetune", axes, "frozen"), {"score": float(rng.uniform())}, None))
    for axes in grid(source=["rte", "mrpc"], target=["rte", "mrpc", "sst2"], seed=[1, 2]):
        runs.append((FakeRun("cross", axes, "cross"), {"score": float(rng.uniform())}, None))
    deepen = FakeRun("deepen", None, "deepened", identity={"duplicate": "3"}, label="MiniLM-7L")
    runs.append((deepen, {"new_depth": 7.0}, {}))
    for axes in grid(model=["MiniLM-6L", "MiniLM-7L"], task=["rte", "mrpc"], seed=[1, 2]):
        identity = {"model": {"@run": deepen.id}} if axes["model"] == "MiniLM-7L" else {}
        runs.append((FakeRun("finetune", axes, "deepened", identity=identity), {"score": float(rng.uniform())},
                     None))
    sources = {t: FakeRun("finetune", None, "crossft", config={"task": t}, label=f"after {t}") for t in ("rte", "sst2")}
    for pre in sources.values():
        runs.append((pre, {"final.score": 0.5}, {}))
    for axes in grid(model=["base", "after rte", "after sst2"], task=["rte", "mrpc"], seed=[1, 2]):
        source = axes["model"].removeprefix("after ")
        identity = {"model": {"@run": sources[source].id}} if source in sources else {}
        runs.append((FakeRun("finetune", axes, "crossft", identity=identity), {"score": float(rng.uniform())},
                     None))
    # paper-2 study commands: one run holds many fine-tuning runs (payload table / runs)
    for axes in grid(task=["rte", "mrpc"], seed=[1, 2]):
        table = [{"layer": layer, "score": float(rng.uniform())} for layer in range(4)]
        runs.append((FakeRun("layers", axes, "study-layers"), {"best_score": 0.0}, {"table": table}))
        table = [{"token_strategy": t, "score": float(rng.uniform())} for t in ("cls", "mean")]
        runs.append((FakeRun("tokens", axes, "study-tokens"), {"best_score": 0.0}, {"table": table}))
        records = [{"selection": "all", "k": 32, "sample": 0, "score": float(rng.uniform())}]
        records += [{"selection": "random", "k": k, "sample": i, "score": float(rng.uniform())}
                    for k in (1, 4) for i in range(3)]
        runs.append((FakeRun("dims", axes, "study-dims"), {"full_score": 0.0}, {"table": [], "runs": records}))
    for axes in grid(seed=[1, 2]):
        table = [{"stage": 1, "trained_on": "sst2", "sst2": float(rng.uniform()), "rte": None},
                 {"stage": 2, "trained_on": "rte", "sst2": float(rng.uniform()), "rte": float(rng.uniform())},
                 {"stage": "single-task", "trained_on": "each alone", "sst2": float(rng.uniform()),
                  "rte": float(rng.uniform())}]
        runs.append((FakeRun("cross", axes, "study-cross"), {"backward_transfer": 0.0}, {"table": table}))
    for axes in grid(model=["MiniLM-6L", "MiniLM-7L"], seed=[1, 2]):
        curve = [{"layer": i, "top1": float(rng.uniform()), "loss": 1.0} for i in range(7)]
        runs.append((FakeRun("reconstruct", axes, "recon"), {"final.top1": curve[-1]["top1"]},
                     {"config": {}, "records": curve}))
    with ResultStore(path) as store:
        store.register("paper", {"command": "finetune"}, "experiments/paper.yaml", [r for r, _, _ in runs])
        for run, metrics, payload in runs:
            store.mark_running(run.id)
            store.mark_done(run.id, metrics=metrics, payload=payload or {}, duration=1.0, worker="test",
                            environment={"git": {"commit": "0123456789abcdef"}, "versions": {"torch": "2.x"}})
        failed = FakeRun("finetune", {"task": "rte", "layer": 9, "seed": 1}, "layers")
        store.register("broken", {}, None, [failed])
        store.mark_failed(failed.id, error="layer 9 out of range")
    return path, runs


@pytest.fixture(scope="module")
def built(synthetic_store, tmp_path_factory):
    path, runs = synthetic_store
    out = tmp_path_factory.mktemp("out") / "report"
    result = api.report(store=str(path), out=str(out), title="Test report")
    return out, result, runs


def metric_values(runs, experiment, metric="score", **where):
    return [m[metric] for r, m, _ in runs if r.experiment == experiment and r.axes is not None
            and all(r.axes.get(k) == v for k, v in where.items())]


def test_aggregate_and_format_match_numpy():
    values = [0.1, 0.4, 0.35]
    mean, std, n = aggregate([*values, None, float("nan")])
    assert (mean, n) == (pytest.approx(np.mean(values)), 3) and std == pytest.approx(np.std(values, ddof=1))
    assert format_cell((mean, std, n)) == cell(values)
    assert format_cell(aggregate([0.5])) == cell([0.5])
    assert format_cell(aggregate([])) == "–"


def test_layer_curves_finds_per_layer_records_anywhere_in_a_payload():
    payload = {"config": {"layer": 1}, "records": [{"layer": 0, "top1": 0.5}, {"layer": 1, "top1": 0.7}],
               "curves": {"variant": [{"layer": 0, "top1": 0.1}]}, "other": [{"x": 1}]}
    assert layer_curves(payload) == {"records": [{"layer": 0.0, "top1": 0.5}, {"layer": 1.0, "top1": 0.7}],
                                     "curves.variant": [{"layer": 0.0, "top1": 0.1}]}


def test_report_writes_markdown_html_pngs_and_csv(built):
    out, result, _ = built
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    pngs = sorted((out / "plots").glob("*.png"))
    assert result.plots == len(pngs) >= 6
    for png in pngs:  # every plot is referenced from the Markdown and embedded in the HTML
        assert f"](plots/{png.name})" in md
        assert base64.b64encode(png.read_bytes()).decode() in html
        assert f'href="plots/{png.name}"' in html  # the HTML also links the PNG file beside it
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count("data:image/png;base64,") == len(pngs)
    assert not re.search(r"<img[^>]+src=\"(?!data:)", html)  # self-contained: no external image
    assert (out / "tables" / "aggregated.csv").is_file() and (out / "report.json").is_file()
    assert set(result.experiments) == {f"paper/{e}" for e in ("layers", "dims", "tokens", "frozen", "cross",
                                                              "deepened", "recon", "crossft", "study-layers",
                                                              "study-tokens", "study-dims", "study-cross")}
    for heading in ("score by layer", "score vs number of dimensions", "token choice", "frozen vs fine-tuned",
                    "cross-fine-tuning matrix", "original vs deepened", "reconstruction curves per layer"):
        assert heading in md and heading in html, heading
    assert "layer 9 out of range" in md  # failed runs are listed with their errors


def test_html_is_the_markdown_rendered_by_markdown_it_with_the_images_inlined(built):
    from markdown_it import MarkdownIt

    out, _, _ = built
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    body = page.split("<main>\n", 1)[1].rsplit("</main>", 1)[0]
    for png in sorted((out / "plots").glob("*.png")):
        body = body.replace("data:image/png;base64," + base64.b64encode(png.read_bytes()).decode(),
                            f"plots/{png.name}")
    assert "data:" not in body
    assert body == MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    assert body.count("<table>") == md.count("\n|---") and "<code>score</code>" in body


def test_text_from_runs_cannot_inject_markup_into_the_html(tmp_path):
    run = FakeRun("finetune", {"task": "rte", "seed": 1}, "e")
    with ResultStore(tmp_path / "r.db") as store:
        store.register("s", {}, None, [run])
        store.mark_failed(run.id, error="<script>alert(1)</script> & <b>bold</b>")
    api.report(store=str(tmp_path / "r.db"), out=str(tmp_path / "rep"))
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script>alert" not in page and "<b>" not in page


def test_layer_task_table_matches_numpy(built):
    out, _, runs = built
    md = (out / "report.md").read_text()
    for task, layer in itertools.product(["rte", "mrpc"], [2, 4, 6]):
        values = metric_values(runs, "layers", task=task, layer=layer)
        assert len(values) == 3
        assert cell(values) in md
    row = next(line for line in md.splitlines() if line.startswith("| 4 |"))
    assert row.count("(n=3)") == 2


def test_dims_tokens_frozen_cross_and_deepened_tables_match_numpy(built):
    out, _, runs = built
    md = (out / "report.md").read_text()
    for dims in ("all", "first:4", "random:16"):
        assert f"| {dims} | {cell(metric_values(runs, 'dims', dims=dims))} |" in md
    for token, task in itertools.product(["cls", "mean", "max-norm"], ["rte", "cola"]):
        assert cell(metric_values(runs, "tokens", token=token, task=task)) in md
    for freeze in ("none", "encoder"):
        assert cell(metric_values(runs, "frozen", freeze=freeze)) in md
    for source, target in itertools.product(["rte", "mrpc"], ["rte", "mrpc", "sst2"]):
        assert cell(metric_values(runs, "cross", source=source, target=target)) in md
    for model, task in itertools.product(["MiniLM-6L", "MiniLM-7L"], ["rte", "mrpc"]):
        assert cell(metric_values(runs, "deepened", model=model, task=task)) in md
    # macro average over tasks per seed, then mean ± std over seeds
    for model in ("MiniLM-6L", "MiniLM-7L"):
        per_seed = [np.mean([metric_values(runs, "deepened", model=model, task=t, seed=s)[0] for t in ("rte", "mrpc")])
                    for s in (1, 2)]
        assert f"| {model} | {cell(per_seed)} |" in md
    assert "MiniLM-7L" in md.split("original vs deepened")[1]


def test_cross_fine_tuning_built_from_finetune_pre_steps(built):
    out, _, runs = built
    md = (out / "report.md").read_text()
    section = md.split("\n## paper/crossft\n")[1].split("\n## ")[0]
    assert "cross-fine-tuning matrix" in section
    for model, source in (("base", "none"), ("after rte", "RTE"), ("after sst2", "SST-2")):  # tasks as papers write them
        row = next(line for line in section.splitlines() if line.startswith(f"| {source} |"))
        expected = [cell(metric_values(runs, "crossft", model=model, task=t)) for t in ("rte", "mrpc")]
        assert row == f"| {source} | " + " | ".join(expected) + " |"


def test_reconstruction_curve_table_matches_numpy(built):
    out, _, runs = built
    md = (out / "report.md").read_text()
    for model in ("MiniLM-6L", "MiniLM-7L"):
        payloads = [p for r, _, p in runs if r.experiment == "recon" and r.axes["model"] == model]
        expected = [cell([p["records"][layer]["top1"] for p in payloads]) for layer in range(7)]
        assert f"| model={model} | " + " | ".join(expected) + " |" in md


def test_report_only_one_sweep_and_user_errors(synthetic_store, tmp_path):
    path, _ = synthetic_store
    result = api.report(store=str(path), out=str(tmp_path / "r"), sweep="paper")
    assert result.counts["failed"] == 0 and result.counts["done"] > 0
    with pytest.raises(BertscopeError, match="no sweep named 'nope'"):
        api.report(store=str(path), out=str(tmp_path / "r2"), sweep="nope")
    assert main(["report", "--store", str(tmp_path / "missing.db"), "--out", str(tmp_path / "x")]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["report", "--store", str(path), "--out", str(tmp_path / "file")]) == 2


def test_an_unwritable_report_out_is_one_line_before_the_store_is_read(synthetic_store, tmp_path, capsys,
                                                                       monkeypatch):
    path, _ = synthetic_store
    (tmp_path / "file").write_text("x")

    def never(*_, **__):
        raise AssertionError("the store was read")

    monkeypatch.setattr(ResultStore, "records", never)
    capsys.readouterr()
    assert main(["report", "--store", str(path), "--out", str(tmp_path / "file" / "report")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write to --out" in err and "\n" not in err
    assert (tmp_path / "file").read_text() == "x"


def test_report_of_a_real_sweep_shows_progress_while_incomplete(tmp_path):
    toy = str(Path(__file__).with_name("sweep_toy.py"))
    spec = tmp_path / "toy.yaml"
    spec.write_text(f"plugins: [{toy}]\ncommand: toy\ngrid: {{x: [1, 2], fail: [false, true], seed: [1, 2]}}\n")
    api.sweep(spec=str(spec), store=str(tmp_path / "r.db"), progress=False, allow_plugins=True, plugins_from="any")
    result = api.report(store=str(tmp_path / "r.db"), out=str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert result.counts == {"pending": 0, "running": 0, "done": 4, "failed": 4}
    expected = cell([1 + 0.01, 1 + 0.02])  # toy score x^2 + seed/100, x=1, over the two seeds
    assert expected in md


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_report_opens_in_headless_chromium_and_shows_its_plots(built, tmp_path):
    import matplotlib.image

    out, result, _ = built
    browser = _chromium()
    url = (out / "report.html").resolve().as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, *profile, "--enable-logging=stderr", "--v=0",
                          "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'data-plots-loaded="(\d+)/(\d+)"', dom.stdout)
    assert loaded, "the page's load handler did not run"
    assert loaded.group(1) == loaded.group(2) == str(result.plots)  # every plot decoded
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr.upper().replace("CONSOLE_", "")
    shot = tmp_path / "screenshot.png"
    run = subprocess.run([browser, *CHROMIUM_FLAGS, "--user-data-dir=" + str(tmp_path / "profile2"),
                          "--window-size=1200,3000", f"--screenshot={shot}", url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    colourful = np.abs(pixels[..., 0] - pixels[..., 2]) > 0.2  # plots (viridis/magma/lines) are not grey text
    assert colourful.mean() > 0.01


def _payloads(runs, experiment):
    return [(r, p) for r, _, p in runs if r.experiment == experiment]


def test_study_commands_are_shown_point_by_point_over_seeds(built):
    out, _, runs = built
    md = (out / "report.md").read_text()
    section = lambda name: md.split(f"\n## paper/{name}\n")[1].split("\n## ")[0]  # noqa: E731
    layers = section("study-layers")
    assert "layer x task" in layers.lower() and "4 finished run(s)" in layers
    for task, layer in itertools.product(["rte", "mrpc"], range(4)):
        values = [p["table"][layer]["score"] for r, p in _payloads(runs, "study-layers") if r.axes["task"] == task]
        assert cell(values) in layers
    tokens = section("study-tokens")
    for task, index in itertools.product(["rte", "mrpc"], range(2)):
        values = [p["table"][index]["score"] for r, p in _payloads(runs, "study-tokens") if r.axes["task"] == task]
        assert cell(values) in tokens
    dims = section("study-dims")
    for task, k in itertools.product(["rte", "mrpc"], (1, 4)):  # samples and seeds are both replicates: n = 6
        values = [rec["score"] for r, p in _payloads(runs, "study-dims") if r.axes["task"] == task
                  for rec in p["runs"] if rec["selection"] == "random" and rec["k"] == k]
        assert len(values) == 6 and cell(values) in dims
    cross = section("study-cross")
    assert "cross-fine-tuning matrix" in cross
    for row_index, source in enumerate(["after SST-2", "after RTE", "single-task"]):
        line = next(x for x in cross.splitlines() if x.startswith(f"| {source} |"))
        for task in ("sst2", "rte"):
            values = [p["table"][row_index][task] for _, p in _payloads(runs, "study-cross")]
            if None in values:
                assert "–" in line
            else:
                assert cell(values) in line


# -- paper-ready output: figures in three formats, LaTeX tables, names, captions, reference lines ------------------

_LATEX_SYMBOLS = re.compile(r"\$\\(pm|times|geq|leq|cdot|rightarrow)\$")
_UNESCAPED = re.compile(r"(?<!\\)[_%#$^~]")


def latex_problems(tex: str) -> list[str]:
    """What would keep a booktabs table file from compiling (checked without a TeX installation)."""
    problems = []
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{([^}]*)\}", tex):
        if kind == "begin":
            stack.append(name)
        elif not stack or stack.pop() != name:
            problems.append(f"unbalanced \\end{{{name}}}")
    if stack:
        problems.append(f"unclosed {stack}")
    rules = [line for line in tex.splitlines() if line in ("\\toprule", "\\midrule", "\\bottomrule")]
    if rules != ["\\toprule", "\\midrule", "\\bottomrule"]:
        problems.append(f"booktabs rules {rules}")
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex)
    if spec is None:
        return [*problems, "no tabular column spec"]
    lines = tex.splitlines()
    body = lines[lines.index("\\toprule") + 1:lines.index("\\bottomrule")]
    for line in body:
        if line == "\\midrule":
            continue
        if not line.endswith("\\\\"):
            problems.append(f"row without \\\\: {line}")
        if len(re.findall(r"(?<!\\)&", line)) != len(spec.group(1)) - 1:
            problems.append(f"row with the wrong number of cells: {line}")
    text = _LATEX_SYMBOLS.sub("", tex)
    text = re.sub(r"\\(textbackslash|textasciitilde|textasciicircum)\{\}", "", text)
    for line in text.splitlines():
        if line.startswith("\\label{"):
            continue
        if _UNESCAPED.search(line):
            problems.append(f"unescaped special character: {line}")
    return problems


def test_to_latex_escapes_special_characters_and_uses_booktabs():
    from bertscope.report.latex import to_latex

    headers = ["task \\ metric", "dev_acc", "50% & more"]
    rows = [["`final.score`", "0.699 ± 0.162 (n=3)", "#1 {x} ~ ^ $"], ["short"], ["–", "a_b", "c%"]]
    tex = to_latex(headers, rows, caption="Score of `layer_4` (95% interval) & more", label="tab:paper/layers x")
    assert latex_problems(tex) == []
    assert "\\usepackage" not in tex and tex.startswith("\\begin{table}") and tex.rstrip().endswith("\\end{table}")
    assert "\\begin{tabular}{lrr}" in tex and "\\label{tab:paper-layers-x}" in tex
    assert "task \\textbackslash{} metric & dev\\_acc & 50\\% \\& more \\\\" in tex
    assert "\\texttt{final.score} & 0.699 $\\pm$ 0.162 (n=3) & \\#1 \\{x\\} \\textasciitilde{} \\textasciicircum{} \\$" in tex
    assert "short &  &  \\\\" in tex and "-- & a\\_b & c\\% \\\\" in tex
    assert "\\caption{Score of \\texttt{layer\\_4} (95\\% interval) \\& more}" in tex
    # and the checker itself catches what it should
    assert latex_problems(tex.replace("dev\\_acc", "dev_acc")) and latex_problems(tex.replace("\\midrule\n", ""))


def _markdown_tables(md: str) -> list[list[str]]:
    """Every table of the Markdown: its lines."""
    tables, current = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_every_figure_is_a_300_dpi_png_with_svg_and_pdf_beside_it(built):
    from PIL import Image

    out, result, _ = built
    md = (out / "report.md").read_text()
    pngs = sorted((out / "plots").glob("*.png"))
    assert result.plots == len(pngs) > 0
    for png in pngs:
        assert round(Image.open(png).info["dpi"][0]) == 300
        svg, pdf = png.with_suffix(".svg"), png.with_suffix(".pdf")
        assert b"<svg" in svg.read_bytes() and pdf.read_bytes()[:5] == b"%PDF-"
        assert f"[SVG](plots/{svg.name})" in md and f"[PDF](plots/{pdf.name})" in md
        for path in (png, svg, pdf):
            assert str(path.relative_to(out)) in result.files
    assert sorted(p.suffix for p in (out / "plots").iterdir()) == sorted([".png", ".svg", ".pdf"] * len(pngs))


def test_every_table_is_also_csv_and_latex(built):
    out, result, _ = built
    md = (out / "report.md").read_text()
    tables = _markdown_tables(md)
    links = re.findall(r"Table files: \[CSV\]\(tables/([^)]+)\.csv\) · \[LaTeX\]\(tables/([^)]+)\.tex\)", md)
    assert len(links) == len(tables) and all(a == b for a, b in links)
    for lines, (name, _) in zip(tables, links):
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert latex_problems(tex) == [], (name, latex_problems(tex))
        assert f"tables/{name}.tex" in result.files and f"tables/{name}.csv" in result.files
        with open(out / "tables" / f"{name}.csv", newline="") as handle:
            rows = list(csv.reader(handle))
        assert len(rows) == len(lines) - 1  # header + body; the Markdown adds the |---| line
        body = [line for line in tex.splitlines() if line.endswith("\\\\")]
        assert len(body) == len(rows)


def _sections(md: str) -> dict[str, str]:
    parts = re.split(r"\n### ", md)
    return {p.split("\n", 1)[0]: p for p in parts[1:]}


def test_sections_name_tasks_models_and_captions_say_what_the_error_bars_are(built):
    from bertscope.data.labels import model_name, task_name

    out, _, runs = built
    md = (out / "report.md").read_text()
    sections = _sections(md)
    assert sections
    for title, text in sections.items():
        experiment = title.split(":")[0].removeprefix("paper/")
        members = [r for r, _, _ in runs if r.experiment == experiment and r.axes is not None]
        context = text.split("\n\n")[1]
        assert context.startswith("*") and "base options:" in context, title
        for task in {t for r in members for k in ("task", "target") if (t := r.axes.get(k))}:
            assert task_name(task) in context, (title, task)
        for model in {r.axes.get("model") or model_name(None) for r in members}:
            assert model in context, (title, model)
    captions = [line for line in md.splitlines() if line.endswith("[PDF](plots/" + line.rsplit("[PDF](plots/", 1)[-1])]
    assert len(captions) == len(list((out / "plots").glob("*.png")))
    for caption in captions:
        assert re.search(r"error bars: ±1 sample standard deviation over n = \d|band: ±1 sample standard deviation|"
                         r"no error bars", caption), caption
    dims = sections["paper/dims: score vs number of dimensions"]
    from bertscope.core.figures import REFERENCE_STYLE, style_words
    from bertscope.report.subsets import CONTROL_STYLE

    assert f"The {style_words(REFERENCE_STYLE)} black line is the head that sees all dimensions" in dims
    assert f"`random:k` (the {style_words(CONTROL_STYLE)} line)" in dims


def test_tables_use_human_metric_names_and_a_chance_row(built):
    out, _, _ = built
    md = (out / "report.md").read_text()
    for lines in _markdown_tables(md):
        headers = [h.strip() for h in lines[0].strip("|").split("|")]
        assert not {"score", "final.score", "top1"} & set(headers), headers
    layers = md.split("\n## paper/layers\n")[1].split("\n## ")[0]
    assert "| layer read (0 = embeddings) | RTE | MRPC |" in layers
    assert "| chance (baseline) | 0.500 | – |" in layers  # no dev labels in this store: uniform chance for RTE
    assert "Uniform-chance baseline" in layers and "No baseline value for MRPC" in layers
    tokens = md.split("\n## paper/tokens\n")[1].split("\n## ")[0]
    assert "| chance (baseline) | 0.500 | 0.000 |" in tokens  # CoLA: Matthews correlation of a guess is 0


def test_reviewer_reading_of_a_real_sweep(tmp_path, glue_dir):
    """A small real store (the toy plugin, a finetune layer sweep and a layers study on RTE with the local GLUE
    copy) read as a reviewer would: what was run, on what, against which baseline, with which error bars."""
    from collections import Counter

    from bertscope.data import glue

    toy = str(Path(__file__).with_name("sweep_toy.py"))
    small = (f"{{task: rte, data_dir: '{glue_dir}', max_train: 16, max_eval: 16, epochs: 1, max_length: 32, "
             f"batch_size: 8, freeze: encoder, cache_dir: '{tmp_path / 'cache'}'}}")
    spec = tmp_path / "paper.yaml"
    spec.write_text(f"name: paper\nplugins: [{toy}]\ncommand: finetune\nexperiments:\n"
                    f"  - {{name: toy, command: toy, grid: {{x: [1, 2], seed: [1, 2]}}}}\n"
                    f"  - {{name: probe, base: {small}, grid: {{layer: ['2', '6'], seed: [1, 2]}}}}\n"
                    f"  - {{name: scan, command: layers, base: {small[:-1]}, layers: '0,6'}}, grid: {{seed: [1, 2]}}}}\n")
    api.sweep(spec=str(spec), store=str(tmp_path / "r.db"), progress=False, allow_plugins=True, plugins_from="any")
    result = api.report(store=str(tmp_path / "r.db"), out=str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert result.counts["done"] == 10 and result.counts["failed"] == 0
    # the majority class of each seed's 16-example dev subset, averaged over the seeds
    shares = []
    for seed in (1, 2):
        labels = glue.load_split("rte", "validation", data_dir=glue_dir, max_examples=16, seed=seed).labels
        shares.append(Counter(labels).most_common(1)[0][1] / len(labels))
    expected = f"{np.mean(shares):.3f}"
    for name in ("probe", "scan"):
        experiment = md.split(f"\n## paper/{name}\n")[1].split("\n## ")[0]
        assert experiment.startswith("\nTask: RTE (textual entailment; GLUE score = accuracy). Model: all-MiniLM-L6-v2")
        assert "`max_train=16`" in experiment and "`max_eval=16`" in experiment and "`freeze=encoder`" in experiment
        assert "data_dir" not in experiment.split("Command")[0]  # where the data was is no option of the result
        for title, text in _sections(experiment).items():
            assert "RTE · all-MiniLM-L6-v2 (embedded default) · base options:" in text, title
        assert f"| majority class (baseline) | {expected} |" in experiment
        assert "Majority-class baseline" in experiment and str(glue_dir / "RTE" / "dev.tsv") in experiment
        assert "error bars: ±1 sample standard deviation over n = 2 seeds" in experiment
    assert "dev GLUE score (`final.combined_score`)" in md.split("\n## paper/probe\n")[1]
    toy_part = md.split("\n## paper/toy\n")[1].split("\n## ")[0]
    assert "GLUE" not in toy_part and "Task" not in toy_part.split("\n\n")[1]  # a plugin's score is no GLUE score
    for png in (tmp_path / "rep" / "plots").glob("*.png"):
        assert png.with_suffix(".svg").is_file() and png.with_suffix(".pdf").is_file()
    for tex in (tmp_path / "rep" / "tables").glob("*.tex"):
        assert latex_problems(tex.read_text()) == [], tex.name


PLUGIN = '''
from dataclasses import dataclass
from bertscope.core.config import Config, opt
from bertscope.core.registry import CommandInfo, ReportSection


@dataclass(frozen=True)
class WobbleConfig(Config):
    command = "wobble-report"
    width: int = opt(1, "width")
    seed: int = opt(0, "seed")
    out: str | None = opt(None, "output folder")


def points(payload):
    return [({"width": row["width"]}, float(row["score"])) for row in payload.get("table") or []]


BERTSCOPE_COMMANDS = [CommandInfo("wobble-report", WobbleConfig, lambda config: None, WobbleConfig, "a study",
                                  resumes_in_out=True,
                                  report=ReportSection("width", "line", "score by width", noun="width",
                                                       stem="widths", points=points))]
'''


def test_a_plugin_study_declares_its_section_and_the_report_draws_it(tmp_path):
    """The report reads sections from the commands' declarations: a plugin study's points get its axis, and the
    section it declares (a line over ``width``) is drawn with the numbers of its points, over seeds."""
    from bertscope.sweep.plugins import load_plugins

    (tmp_path / "wobble.py").write_text(PLUGIN)
    load_plugins(["wobble.py"], tmp_path)
    rng = np.random.default_rng(1)
    runs = []
    for seed in (1, 2, 3):
        table = [{"width": w, "score": float(rng.uniform())} for w in (2, 4, 8)]
        runs.append((FakeRun("wobble-report", {"seed": seed}, "wob"), table))
    with ResultStore(tmp_path / "r.db") as store:
        store.register("plug", {}, None, [r for r, _ in runs])
        for run, table in runs:
            store.mark_running(run.id)
            store.mark_done(run.id, metrics={"best": 0.0}, payload={"table": table}, duration=1.0, worker="t",
                            environment={})
    api.report(store=str(tmp_path / "r.db"), out=str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### plug/wob: score by width" in md and (tmp_path / "rep" / "plots" / "plug-wob-widths.png").is_file()
    assert "Study runs are shown point by point" in md
    for index, width in enumerate((2, 4, 8)):
        assert f"| {width} | {cell([table[index]['score'] for _, table in runs])} |" in md


def test_bounded_metrics_keep_their_interval_in_range_and_flags_are_shares():
    from bertscope.core.stats import t_interval
    from bertscope.report.aggregate import aggregate, format_cell, metric_bounds

    values = [0.2, 1.0, 1.0]  # a wide spread near the top of [0, 1]
    stats = aggregate(values)
    low, high = t_interval(*stats)
    assert high > 1.0 and low < 0.2  # the raw t interval leaves the range
    cell = format_cell(stats, metric="eval.accuracy")
    assert cell.endswith(f"[{max(low, 0.0):.3f}, 1.000] (n=3)")
    assert format_cell(aggregate([-0.9, 0.9, -0.9]), metric="matthews_correlation").split("[")[1].startswith("-1.000")
    assert metric_bounds("eval.pearson") == (-1.0, 1.0) and metric_bounds("loss") is None
    assert format_cell(stats) == format_cell(stats, metric="loss")  # unbounded: unchanged
    assert format_cell(aggregate([1.0, 0.0, 1.0, 1.0]), metric="learned") == "3/4 learned"
