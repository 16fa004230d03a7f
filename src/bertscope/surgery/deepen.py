"""Layer surgery: deepen or shrink a pre-trained encoder by copying or removing layers, with no training.

Paper 1 (Kao et al., arXiv 2001.09309) deepens a pre-trained encoder by duplicating some of its layers and then
fine-tunes it; its first version also reports that removing or duplicating most single layers barely changes the
outputs. Here every such edit is a *layer map*: the list of source-layer indices of the new stack (``0,1,2,2,3``
duplicates layer 2 of a 4-layer model). ``--duplicate`` and ``--remove`` are sugar that produce a map. Layers are
counted as transformer-layer (block) indices 0..L-1, 0 = the first transformer layer (:mod:`bertscope.core.options`);
the result file says so (``layer_numbering: block``).

:func:`run_deepen` applies a map with real deep copies, saves a normal Hugging Face folder through a temporary folder,
verifies it (reload, depth, no shared storage, reloaded outputs = in-memory outputs = the original's layers composed
by the map) and only then renames it into place, so a half-written folder never looks complete. A sentence-transformers
source keeps its modules (:mod:`bertscope.models.sentence_transformers_files`), and the folder gets a model card
(:mod:`bertscope.models.cards`) that keeps the source's card metadata and says what was done and how to load the result.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from bertscope._version import __version__
from bertscope.core import publish
from bertscope.core.device import resolve_device
from bertscope.core.errors import BertscopeError
from bertscope.core.options import BLOCK, NUMBERING_NOTES, parse_blocks, parse_layer_map
from bertscope.core.registry import CommandInfo
from bertscope.core.results import environment_info, write_json_atomic
from bertscope.models import families, loading, runners
from bertscope.models.cards import hub_model_id, write_model_card
from bertscope.models.origin import CONFIG_NOTE_KEY, resolvable_source
from bertscope.models.sentence_transformers_files import (
    SentenceTransformersFiles,
    find_sentence_transformers_files,
)
from bertscope.surgery.config import DeepenConfig
from bertscope.surgery.layer_map import apply_layer_map, check_layer_map

__all__ = [
    "PROVENANCE_FILE",
    "DeepenResult",
    "Verification",
    "duplicate_map",
    "layer_map_from_config",
    "remove_map",
    "run_deepen",
    "variant_model",
    "verify_checkpoint",
]

PROVENANCE_FILE = "bertscope_provenance.json"


def _runs(layers: list[int]) -> list[list[int]]:
    """Contiguous runs of sorted indices: [2, 6, 7, 8] -> [[2], [6, 7, 8]]."""
    runs: list[list[int]] = []
    for i in layers:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def duplicate_map(depth: int, layers: list[int], copies: int = 1, placement: str = "adjacent") -> list[int]:
    """The map that duplicates ``layers`` ``copies`` extra times.

    ``adjacent``: every chosen layer is followed by its copies (6-8 -> 6,6,7,7,8,8). ``block``: each contiguous run
    of chosen layers is repeated after itself (6-8 -> 6,7,8,6,7,8), which is how paper 1 stacks a range.
    """
    chosen = set(layers)
    if placement == "adjacent":
        return [j for i in range(depth) for j in [i] * (1 + copies * (i in chosen))]
    if placement != "block":
        raise BertscopeError(f"--placement must be adjacent or block, got {placement!r}")
    ends = {run[-1]: run for run in _runs(sorted(chosen))}
    out: list[int] = []
    for i in range(depth):
        out.append(i)
        if i in ends:
            out.extend(ends[i] * copies)
    return out


def remove_map(depth: int, layers: list[int]) -> list[int]:
    """The map without ``layers``; removing every layer is an error."""
    kept = [i for i in range(depth) if i not in set(layers)]
    if not kept:
        raise BertscopeError(f"--remove would leave no layers (the model has {depth}); keep at least one")
    return kept


def layer_map_from_config(config: DeepenConfig, depth: int) -> tuple[list[int], dict[str, Any]]:
    """(layer map, description of the operation) for a deepen config and a model of ``depth`` layers.

    Every index is a transformer-layer (block) index 0..depth-1 (:func:`bertscope.core.options.parse_blocks`).
    """
    if config.layer_map is not None:
        return list(parse_layer_map(config.layer_map, depth)), {"op": "layer-map", "spec": config.layer_map}
    if config.duplicate is not None:
        layers = list(parse_blocks(config.duplicate, depth, option="--duplicate"))
        return duplicate_map(depth, layers, config.copies, config.placement), {
            "op": "duplicate", "layers": layers, "copies": config.copies, "placement": config.placement}
    layers = list(parse_blocks(config.remove or "", depth, option="--remove"))
    return remove_map(depth, layers), {"op": "remove", "layers": layers}


ModelT = TypeVar("ModelT", bound=torch.nn.Module)


def variant_model(model: ModelT, layer_map: list[int]) -> ModelT:
    """A deep copy of ``model`` whose layer stack follows ``layer_map`` (the original is left untouched)."""
    check_layer_map(model, layer_map)
    return apply_layer_map(copy.deepcopy(model), layer_map)


@dataclass(frozen=True)
class Verification:
    """What was checked on a saved folder, with the measured differences."""

    reloaded_depth: int
    expected_depth: int
    shared_storage: list[str]
    max_abs_diff_reload: float
    max_abs_diff_composition: float
    identity_map: bool
    max_abs_diff_original: float | None
    tolerance: float
    storage_note: str = ""

    @property
    def ok(self) -> bool:
        diffs = [self.max_abs_diff_reload, self.max_abs_diff_composition]
        if self.max_abs_diff_original is not None:
            diffs.append(self.max_abs_diff_original)
        return (self.reloaded_depth == self.expected_depth and not self.shared_storage
                and all(d <= self.tolerance for d in diffs))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reloaded_depth": self.reloaded_depth, "expected_depth": self.expected_depth,
                "shared_storage": self.shared_storage, "storage_note": self.storage_note,
                "max_abs_diff_reload": self.max_abs_diff_reload,
                "max_abs_diff_composition": self.max_abs_diff_composition, "identity_map": self.identity_map,
                "max_abs_diff_original": self.max_abs_diff_original, "tolerance": self.tolerance}


def _probe_inputs(config: Any, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random token ids (two rows, the second padded) for output checks that need no tokenizer."""
    g = torch.Generator().manual_seed(seed)
    vocab = int(config.vocab_size)
    pad = getattr(config, "pad_token_id", None)
    ids = torch.randint(5, vocab, (2, 12), generator=g)
    if pad is not None:
        ids[ids == pad] = 5 if pad != 5 else 6
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    if pad is not None:
        ids[1, 8:] = pad
    return ids.to(device), mask.to(device)


def _first_output(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask)
    first = out[0] if isinstance(out, tuple) else next(iter(out.values()))
    return first.float()


def _max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    if a.shape != b.shape:
        return float("inf")
    diff = (a.float() - b.float()).abs()
    if mask is not None and diff.dim() >= 2 and diff.shape[:2] == mask.shape:
        diff = diff[mask.bool()]  # padded positions are undefined in some families; compare real tokens
    return float(diff.max()) if diff.numel() else 0.0


def _shared_storage(model: torch.nn.Module) -> list[str]:
    """Names of layer parameters whose storage another layer of the stack also uses (must be none)."""
    owner: dict[int, str] = {}
    shared: list[str] = []
    for index, layer in enumerate(families.get_layers(model)):
        for name, tensor in list(layer.named_parameters()) + list(layer.named_buffers()):
            ptr = tensor.untyped_storage().data_ptr()
            if tensor.numel() == 0 or ptr == 0:
                continue
            here = f"layer {index}: {name}"
            if ptr in owner and not owner[ptr].startswith(f"layer {index}:"):
                shared.append(f"{here} shares storage with {owner[ptr]}")
            owner.setdefault(ptr, here)
    return shared


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 2e-2


@torch.no_grad()
def verify_checkpoint(
    folder: str | Path,
    variant: torch.nn.Module,
    original: torch.nn.Module,
    layer_map: list[int],
    *,
    seed: int = 0,
) -> Verification:
    """Reload ``folder`` and check it against the in-memory ``variant`` and the ``original``'s layers.

    The composition check runs the original's own layers in map order (:func:`bertscope.models.runners.run_layers`) without building
    anything, an independent reference for what the variant must compute; for the identity map the reloaded model
    must also reproduce the original's outputs.
    """
    device = next(variant.parameters()).device
    reloaded = loading.load_saved_architecture(str(folder), device=device).model
    ids, mask = _probe_inputs(original.config, seed, device)
    dtype = next(variant.parameters()).dtype
    out_variant = _first_output(variant, ids, mask)
    out_reloaded = _first_output(reloaded, ids, mask)
    hidden = runners.embed(original, ids, mask)
    composed = families.finalize_hidden(original, runners.run_layers(original, hidden, mask, layer_map))
    base_variant = families.base_encoder(variant)(input_ids=ids, attention_mask=mask)[0]
    identity = list(layer_map) == list(range(families.num_layers(original)))
    diff_original = _max_diff(_first_output(original, ids, mask), out_reloaded, mask) if identity else None
    family = families.family_for(original)
    shared = [] if family.shared_layers else _shared_storage(reloaded) + _shared_storage(variant)
    note = "one shared layer by design (only the depth changed)" if family.shared_layers else ""
    return Verification(
        reloaded_depth=families.num_layers(reloaded),
        expected_depth=len(layer_map),
        shared_storage=shared,
        max_abs_diff_reload=_max_diff(out_variant, out_reloaded, mask),
        max_abs_diff_composition=_max_diff(base_variant, composed, mask),
        identity_map=identity,
        max_abs_diff_original=diff_original,
        tolerance=_tolerance(dtype),
        storage_note=note,
    )


@dataclass(frozen=True)
class DeepenResult:
    """A saved, verified deepened (or shrunk) checkpoint."""

    config: DeepenConfig
    source: str
    family: str
    architecture: str
    operation: dict[str, Any]
    layer_map: list[int]
    old_depth: int
    new_depth: int
    out: str
    verification: dict[str, Any] | None
    tokenizer_saved: bool
    initialised_on_load: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    sentence_transformers: dict[str, Any] = field(default_factory=dict)
    model_card: str | None = None
    origin: dict[str, Any] = field(default_factory=dict)  # what config.json records (bertscope_surgery)

    @property
    def sentence_transformers_files(self) -> list[str]:
        """The sentence-transformers files carried over from the source (empty when it had none)."""
        return list(self.sentence_transformers.get("files", []))

    def to_dict(self) -> dict[str, Any]:
        return {"command": "deepen", "config": self.config.to_dict(), "bertscope_version": __version__,
                "source_model": self.source, "origin": self.origin, "family": self.family,
                "architecture": self.architecture,
                "operation": self.operation, "layer_map": self.layer_map, "layer_numbering": BLOCK,
                "layer_numbering_note": NUMBERING_NOTES[BLOCK], "old_depth": self.old_depth,
                "new_depth": self.new_depth, "out": self.out, "tokenizer_saved": self.tokenizer_saved,
                "initialised_on_load": self.initialised_on_load,
                "initialised_on_load_note": "weights the source checkpoint lacked: transformers initialised them "
                                            "randomly on load, so they are random in this folder too",
                "verification": self.verification, "sentence_transformers": self.sentence_transformers,
                "model_card": self.model_card, "environment": self.environment}

    def metrics(self) -> dict[str, float]:
        m = {"old_depth": float(self.old_depth), "new_depth": float(self.new_depth)}
        if self.verification:
            m["verify.ok"] = float(self.verification["ok"])
            m["verify.max_abs_diff_reload"] = float(self.verification["max_abs_diff_reload"])
        return m

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"deepen: {self.old_depth} -> {self.new_depth} layers ({self.family})", show_header=False)
        table.add_row("source", self.source)
        table.add_row("layer map", ",".join(map(str, self.layer_map)))
        table.add_row("saved to", self.out)
        if self.verification is None:
            table.add_row("verified", "skipped (--no-verify)")
        else:
            v = self.verification
            table.add_row("verified", "yes" if v["ok"] else "NO")
            table.add_row("max |reloaded - in memory|", f"{v['max_abs_diff_reload']:.2e}")
            table.add_row("max |in memory - composed originals|", f"{v['max_abs_diff_composition']:.2e}")
        if not self.tokenizer_saved:
            table.add_row("tokenizer", "none found in the source; copy one in before use")
        carried = self.sentence_transformers_files
        if carried:
            table.add_row("sentence-transformers", f"{len(carried)} files carried (modules.json, ...)")
        elif not self.sentence_transformers.get("source_read", True):
            table.add_row("sentence-transformers", self.sentence_transformers["note"])
        if self.initialised_on_load:
            table.add_row("random weights", f"{len(self.initialised_on_load)} tensors the source lacked (see "
                                            f"{PROVENANCE_FILE})")
        return table


_PIPELINE_TAGS = {"ForMaskedLM": "fill-mask", "ForPreTraining": "fill-mask",
                  "ForSequenceClassification": "text-classification",
                  "ForTokenClassification": "token-classification", "ForQuestionAnswering": "question-answering"}
_AUTO_CLASSES = {"fill-mask": "AutoModelForMaskedLM", "text-classification": "AutoModelForSequenceClassification",
                 "token-classification": "AutoModelForTokenClassification",
                 "question-answering": "AutoModelForQuestionAnswering"}


def _pipeline_tag(architecture: str) -> str:
    return next((tag for suffix, tag in _PIPELINE_TAGS.items() if architecture.endswith(suffix)),
                "feature-extraction")


def _surgery_text(result: DeepenResult) -> str:
    """The card's surgery section: what each new layer is, which layers were duplicated or removed."""
    counts = Counter(result.layer_map)
    duplicated = [f"{i} ({n} times)" for i, n in sorted(counts.items()) if n > 1]
    removed = [str(i) for i in range(result.old_depth) if i not in counts]
    first_seen = list(dict.fromkeys(result.layer_map))
    details = ", ".join(f"{key} {','.join(map(str, value)) if isinstance(value, list) else value}"
                        for key, value in result.operation.items() if key != "op")
    lines = [f"- operation: `{result.operation['op']}`" + (f" ({details})" if details else ""),
             f"- depth: {result.old_depth} -> {result.new_depth} transformer layers",
             f"- layer map (source layer of each new layer, top to bottom): `{','.join(map(str, result.layer_map))}`",
             f"- duplicated source layers: {', '.join(duplicated) or 'none'}",
             f"- removed source layers: {', '.join(removed) or 'none'}"]
    if first_seen != sorted(first_seen):
        lines.append("- the kept layers are reordered (see the map)")
    lines += [f"- layer numbering: {NUMBERING_NOTES[BLOCK]}", "", "| new layer | source layer |", "|---|---|"]
    lines += [f"| {position} | {source} |" for position, source in enumerate(result.layer_map)]
    lines += ["", "Each new layer is a real copy of its source layer's weights (no shared tensors); embeddings, final "
              "norm and every head of the source are kept as they were. No training was done."]
    return "\n".join(lines)


def _verification_text(verification: dict[str, Any] | None) -> str:
    if verification is None:
        return "Skipped (`--no-verify`): this folder was not reloaded and checked."
    v = verification
    lines = [f"Passed: {'yes' if v['ok'] else 'no'} (tolerance {v['tolerance']:g}, max absolute difference on a seeded "
             "probe batch).",
             f"- reloaded depth: {v['reloaded_depth']} (expected {v['expected_depth']})",
             f"- layers sharing storage: {len(v['shared_storage'])}" + (f" ({v['storage_note']})"
                                                                         if v.get("storage_note") else ""),
             f"- reloaded folder vs in-memory model: {v['max_abs_diff_reload']:.2e}",
             f"- in-memory model vs the source's own layers run in map order: {v['max_abs_diff_composition']:.2e}"]
    if v.get("max_abs_diff_original") is not None:
        lines.append(f"- identity map, reloaded folder vs the source model: {v['max_abs_diff_original']:.2e}")
    return "\n".join(lines)


def _loading_text(result: DeepenResult, st: SentenceTransformersFiles, folder: str) -> str:
    auto = _AUTO_CLASSES.get(_pipeline_tag(result.architecture), "AutoModel")
    text = ["With `transformers` (bertscope is not needed):", "", "```python",
            "from transformers import AutoModel, AutoTokenizer", "",
            f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
            f'model = AutoModel.from_pretrained("{folder}")  # the encoder alone']
    if auto != "AutoModel":
        text += [f"from transformers import {auto}",
                 f'with_head = {auto}.from_pretrained("{folder}")  # with the source\'s {result.architecture} head']
    text += ["```"]
    if st.found:
        names = ", ".join(m.rsplit(".", 1)[-1] for m in st.modules)
        text += ["", f"With `sentence-transformers` (the source's modules were carried over: {names}):", "",
                 "```python", "from sentence_transformers import SentenceTransformer", "",
                 f'model = SentenceTransformer("{folder}")',
                 'embeddings = model.encode(["A first sentence.", "Another one."])', "```"]
    return "\n".join(text)


def _write_card(folder: Path, result: DeepenResult, st: SentenceTransformersFiles) -> str:
    """Write README.md into ``folder``: the source's card metadata kept, the surgery and its checks added."""
    name = result.source.removeprefix("embedded:")
    shown = Path(name).name if Path(os.path.expanduser(name)).exists() else name
    tag = "sentence-similarity" if st.found else _pipeline_tag(result.architecture)
    sections = {"Surgery": _surgery_text(result), "Verification": _verification_text(result.verification),
                "How to load": _loading_text(result, st, result.out)}
    if st.found:
        sections["sentence-transformers files"] = (
            "Carried over from the source: " + ", ".join(f"`{f}`" for f in st.files)
            + (". Adapted to the new depth: " + "; ".join(st.adaptations) if st.adaptations else
               "; none of them names the depth, so they are unchanged") + ".")
    if result.initialised_on_load:
        sections["Randomly initialised weights"] = (
            f"{len(result.initialised_on_load)} tensors were missing from the source checkpoint; transformers "
            f"initialised them randomly on load, so they are random here too (listed in `{PROVENANCE_FILE}`).")
    sections["Provenance"] = (f"Made by `bertscope deepen` (bertscope {__version__}) from `{result.source}`. Every "
                              f"option, the verification numbers and the library versions are in `{PROVENANCE_FILE}`; "
                              "the source card's metadata (license, language, datasets, tags) is kept above.")
    metadata = {"library_name": "sentence-transformers" if st.found else "transformers", "pipeline_tag": tag,
                "tags": ["layer-surgery"]}
    summary = (f"`{shown}` with its transformer layers rearranged by bertscope's `deepen`, with no training: "
               f"{result.old_depth} -> {result.new_depth} layers, layer map `{','.join(map(str, result.layer_map))}`.")
    path = write_model_card(folder, f"{shown}: {result.new_depth} layers (bertscope deepen)", summary=summary,
                            sections=sections, metadata=metadata, source=st.folder,
                            base_model=hub_model_id(result.source))  # hub ids only
    return path.name


def _check_out(out: Path, overwrite: bool, source: str) -> None:
    if out.exists():
        if not out.is_dir():
            raise BertscopeError(f"--out {out} exists and is not a folder")
        if not overwrite:
            raise BertscopeError(f"--out {out} already exists; choose another folder or pass --overwrite")
    if Path(source).exists() and Path(source).resolve() == out.resolve() and not overwrite:
        raise BertscopeError("--out is the source model folder; pass --overwrite to replace it")
    publish.check_writable(out.parent, "--out's folder")  # the new folder is built beside --out, then renamed


def run_deepen(config: DeepenConfig) -> DeepenResult:
    """Build the variant named by ``config``, save it as a Hugging Face folder, verify it, publish it atomically."""
    with loading.quiet_hugging_face(logs=False):  # per-file load/save bars would bury bertscope's own messages
        return _run_deepen(config)


def _run_deepen(config: DeepenConfig) -> DeepenResult:
    out = Path(os.path.expanduser(config.out or ""))
    source = loading.resolve_model_source(config.model)
    _check_out(out, config.overwrite, source)
    model_config = loading.load_config(config.model)  # bad maps fail here, before any weights are read
    depth = families.num_layers(model_config)
    layer_map, operation = layer_map_from_config(config, depth)
    check_layer_map(model_config, layer_map)
    st_files = find_sentence_transformers_files(config.model, num_layers=len(layer_map))  # refusals come here too
    loaded = loading.load_saved_architecture(config.model, device=resolve_device(config.device))
    original = loaded.model
    variant = variant_model(original, layer_map)
    note = {"source_model": config.model or loading.DEFAULT_MODEL_NAME,
            "source_model_resolved": resolvable_source(config.model),
            "source_weights_fingerprint": loading.weights_fingerprint(original), "layer_map": layer_map,
            "old_depth": depth, "new_depth": len(layer_map), "layer_numbering": BLOCK,
            "bertscope_version": __version__, "provenance_file": PROVENANCE_FILE}
    setattr(variant.config, CONFIG_NOTE_KEY, note)
    variant.config.name_or_path = str(out)

    with publish.building(out) as tmp:  # published only when complete; a crash leaves the previous folder
        variant.save_pretrained(tmp)
        tokenizer_saved = True
        try:
            loading.load_tokenizer(config.model).save_pretrained(tmp)
        except BertscopeError:
            tokenizer_saved = False
        st_files.write(tmp)
        verification = None
        if config.verify:
            check = verify_checkpoint(tmp, variant, original, layer_map, seed=config.seed)
            verification = check.to_dict()
            if not check.ok:
                raise BertscopeError(
                    f"verification failed (reloaded depth {check.reloaded_depth}/{check.expected_depth}, "
                    f"max diff {check.max_abs_diff_reload:.2e}/{check.max_abs_diff_composition:.2e}, "
                    f"{len(check.shared_storage)} shared tensors); nothing was written to {out}"
                )
        result = DeepenResult(
            config=config, source=config.model or loading.DEFAULT_MODEL_NAME, family=loaded.family.name,
            architecture=type(variant).__name__, operation=operation, layer_map=layer_map, old_depth=depth,
            new_depth=len(layer_map), out=str(out), verification=verification, tokenizer_saved=tokenizer_saved,
            initialised_on_load=sorted(loaded.missing_keys),
            environment={**environment_info(), "attention": loaded.attention},  # what verification ran
            sentence_transformers=st_files.to_dict(), origin=note,
        )
        result = replace(result, model_card=_write_card(tmp, result, st_files))
        write_json_atomic(tmp / PROVENANCE_FILE, result.to_dict())
    return result


COMMAND = CommandInfo("deepen", DeepenConfig, run_deepen, DeepenResult,
                      "deepen or shrink an encoder by copying/removing layers; saves a verified HF folder",
                      model_subdir="")
