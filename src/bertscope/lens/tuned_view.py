"""What ``reconstruct --lens tuned`` shows and writes: the logit and tuned lenses side by side.

* :func:`lens_section`: the ``lens`` part of reconstruct.json (training, curve, held-out KL on the fit corpus's
  held-out part, and both lenses on the measured text);
* :func:`render_lens`: the side-by-side table; :func:`lens_metrics`: the flat numbers sweeps and reports read;
* :func:`write_lens`: ``lens.csv``, the figure ``lens.png/.svg/.pdf`` (headline: KL to the final distribution per
  hidden state, both lenses; then top-1 agreement with the final layer, input top-1, entropy, and the training curve)
  and the translators (``tuned_lens/translators.safetensors`` + ``lens.json``) beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertscope.core import publish
from bertscope.core.figures import save_figure
from bertscope.core.results import write_csv_atomic
from bertscope.data.labels import model_name, texts_name
from bertscope.lens.tuned import LensComparison, TunedLens

__all__ = ["lens_metrics", "lens_section", "render_lens", "write_lens"]

_STYLES = {"logit": ("-", "o", "logit lens (head on the layer as it is)"),
           "tuned": ("--", "s", "tuned lens (translator, then the head)")}


def lens_section(lens: TunedLens, comparison: LensComparison, head: dict[str, Any]) -> dict[str, Any]:
    """The ``lens`` section of reconstruct.json."""
    fitted = head.get("mode") == "fit"
    return {
        "kind": "tuned",
        "compared": ["logit", "tuned"],
        "head": ("the fitted head (the model has no pretrained MLM head, or --head fit asked for one), as the logit "
                 "lens uses") if fitted else "the pretrained MLM head, as the logit lens uses",
        "tuned": lens.info,
        "records": comparison.records(),
        "definitions": {
            "kl_to_final": "mean over counted tokens of KL(p_final || p_layer), nats; p_final = the head on the last "
                           "hidden state",
            "entropy": "mean entropy of the lens's distribution, nats",
            "final_agreement": "share of counted tokens whose top-1 equals the final layer's top-1",
            "top1/top5/mean_rank/nll/exact": "input reconstruction, as in records",
        },
    }


def _rows(section: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return sorted((r for r in section["records"] if r["lens"] == kind), key=lambda r: r["layer"])


def lens_metrics(section: dict[str, Any]) -> dict[str, float]:
    """``lens.<kind>.layer<l>.<name>`` for every measured number, and the held-out KL on the fit corpus."""
    out: dict[str, float] = {}
    for r in section["records"]:
        for name in ("kl_to_final", "entropy", "final_agreement", "top1", "nll"):
            out[f"lens.{r['lens']}.layer{r['layer']}.{name}"] = float(r[name])
    for r in section["tuned"].get("heldout", []):
        for kind in ("logit", "tuned"):
            out[f"lens.heldout.{kind}.layer{r['layer']}.kl"] = float(r[f"{kind}_kl"])
    return out


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def render_lens(section: dict[str, Any]) -> Any:
    """The side-by-side table (rich)."""
    from rich.table import Table

    info = section["tuned"]
    table = Table(title="logit lens vs tuned lens, per hidden state (measured text)", title_justify="left")
    for label in ("layer", "KL logit", "KL tuned", "agree logit", "agree tuned", "top-1 logit", "top-1 tuned",
                  "entropy logit", "entropy tuned", "held-out KL logit", "held-out KL tuned"):
        table.add_column(label, justify="right")
    held = {r["layer"]: r for r in info.get("heldout", [])}
    for a, b in zip(_rows(section, "logit"), _rows(section, "tuned")):
        h = held.get(a["layer"], {})
        table.add_row(str(a["layer"]), _fmt(a["kl_to_final"]), _fmt(b["kl_to_final"]),
                      f"{100 * a['final_agreement']:.1f}%", f"{100 * b['final_agreement']:.1f}%",
                      f"{100 * a['top1']:.1f}%", f"{100 * b['top1']:.1f}%", _fmt(a["entropy"], 2),
                      _fmt(b["entropy"], 2), _fmt(h.get("logit_kl", float("nan"))),
                      _fmt(h.get("tuned_kl", float("nan"))))
    corpus = info.get("corpus") or {}
    curve = info.get("curve") or []
    notes = [f"decoded with {section['head']}",
             f"translators {'reused from cache' if info.get('reused') else 'trained now'} on {corpus.get('kind')} "
             f"({corpus.get('train_sentences')} sentences, {corpus.get('train_tokens')} tokens; held out "
             f"{corpus.get('heldout_sentences')} sentences), never on the measured text; last hidden state's "
             f"translator deviates from the identity by {info.get('last_layer_deviation', float('nan')):.2e}"]
    if curve:
        notes.append("training curve (step: train KL / held-out KL, mean over layers): " + ", ".join(
            f"{c['step']}: {c['train_kl']:.3f}/{c['heldout_kl']:.3f}" for c in curve))
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
    return table


def _plot(section: dict[str, Any], path: Path, title: str) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 7.6), constrained_layout=True)
    grid = fig.add_gridspec(2, 4)
    headline = fig.add_subplot(grid[:, :2])
    panels = [fig.add_subplot(grid[i, j]) for i in range(2) for j in (2, 3)]
    held = section["tuned"].get("heldout", [])
    for kind in ("logit", "tuned"):
        style, marker, label = _STYLES[kind]
        rows = _rows(section, kind)
        x = [r["layer"] for r in rows]
        headline.plot(x, [r["kl_to_final"] for r in rows], style, marker=marker, label=f"{label}, measured text")
        if held:
            headline.plot([r["layer"] for r in held], [r[f"{kind}_kl"] for r in held], style, marker=marker,
                          alpha=0.45, label=f"{label}, fit corpus held out")
        panels[0].plot(x, [100 * r["final_agreement"] for r in rows], style, marker=marker, label=kind)
        panels[1].plot(x, [100 * r["top1"] for r in rows], style, marker=marker, label=kind)
        panels[2].plot(x, [r["entropy"] for r in rows], style, marker=marker, label=kind)
    headline.set_ylabel("KL(final || layer), nats (log scale)")
    headline.set_yscale("symlog", linthresh=1e-3)
    headline.set_title("KL divergence to the final layer's distribution", fontsize=10)
    panels[0].set_ylabel("top-1 = final layer's top-1 (%)")
    panels[1].set_ylabel("input token is top-1 (%)")
    panels[2].set_ylabel("entropy of the lens (nats)")
    curve = section["tuned"].get("curve") or []
    if curve:
        panels[3].plot([c["step"] for c in curve], [c["train_kl"] for c in curve], "-", marker="o", label="train")
        panels[3].plot([c["step"] for c in curve], [c["heldout_kl"] for c in curve], "--", marker="s",
                       label="held out")
        panels[3].set_xlabel("training step")
        panels[3].set_ylabel("KL, mean over layers (nats)")
        panels[3].set_title("tuned-lens training curve", fontsize=9)
    for ax in (headline, *panels[:3]):
        ax.set_xlabel("hidden state (0 = embeddings, l = output of layer l)")
    for ax in (headline, *panels):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, close=True)


def write_lens(section: dict[str, Any], lens: TunedLens, folder: Path, model: str,
               texts: dict[str, Any]) -> dict[str, str]:
    """``lens.csv``, the figure and the translators in ``folder``; returns what was written (name -> path)."""
    files = {"lens_csv": str(folder / "lens.csv")}
    write_csv_atomic(files["lens_csv"], section["records"])
    title = (f"Logit lens vs tuned lens: {model_name(model)} on {texts_name(texts)}; one run, no error bars")
    files.update({f"lens_{k}": v for k, v in _plot(section, folder / "lens.png", title).items()})
    target = folder / "tuned_lens"
    with publish.building(target) as tmp:  # the folder appears whole
        written = lens.save(tmp)
    files.update({name: str(target / Path(path).name) for name, path in written.items()})
    return files
