"""Fine-tuned models that live on outside bertscope: plain Hugging Face classifiers, label names, model cards.

``finetune --save-model`` writes ``OUT/model`` through :func:`save_finetuned`:

* when the trained selecting head is exactly the family's standard ``*ForSequenceClassification`` (``--pooler``, the
  ``cls`` token of the last hidden layer, all dimensions, ``--head linear``; which families have such a classifier
  and where its weights go is data in :mod:`bertscope.models.families`, ``Family.sequence_classifier``), the folder *is*
  that model: ``config.json`` with ``architectures``, ``id2label`` / ``label2id`` (the task's label names),
  ``num_labels`` (written out, though transformers derives it from ``id2label``) and ``problem_type``, its weights and the tokenizer, so ``transformers.pipeline("text-classification",
  model=OUT/model)`` gives bertscope's predictions, with label names, in a process that never imports bertscope;
* otherwise the encoder is saved as a plain transformers folder whose config still carries the label names, and the
  head needs bertscope (:func:`bertscope.finetune.command.load_finetuned`, ``bertscope predict``).

Either way ``head_config.json`` + ``head.safetensors`` sit beside it (``load_finetuned`` reads every head the same
way), the tokenizer's ``model_max_length`` is the length the run truncated to (``truncation=True`` in a pipeline then
truncates exactly as bertscope did), and a ``README.md`` model card (:mod:`bertscope.models.cards`) says what the model is,
how it was trained, what it scored and how to load it. The folder is built beside ``OUT/model`` and renamed into
place when complete (:mod:`bertscope.core.publish`), and ``config.json`` and ``head_config.json`` carry the same save id
(``bertscope_save_id``), so ``load_finetuned`` refuses a head and an encoder of different saves.

:func:`prediction_rows` turns logits into the label-name and probability columns of ``predictions.csv`` (written by
``finetune`` and ``predict`` alike).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import shlex
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bertscope.core import publish
from bertscope.core.config import config_options
from bertscope.core.errors import BertscopeError
from bertscope.core.registry import LOCATION_OPTIONS
from bertscope.core.results import write_text_atomic
from bertscope.data import glue
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.head import HeadSpec, SelectingHead
from bertscope.models import families, loading
from bertscope.models.cards import hub_model_id, write_model_card
from bertscope.models.sentence_transformers_files import copy_sentence_transformers_files

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from bertscope.finetune.result import FinetuneResult

__all__ = [
    "REGRESSION_LABEL",
    "SAVE_ID_KEY",
    "SavedModel",
    "check_saved_together",
    "classifier_blocker",
    "folded_classifier",
    "label_maps",
    "label_names",
    "prediction_rows",
    "save_finetuned",
    "to_sequence_classifier",
]

#: The name of the one output of a regression head (STS-B), in ``id2label`` and pipeline output.
REGRESSION_LABEL = "score"


@dataclass(frozen=True)
class SavedModel:
    """What :func:`save_finetuned` wrote: the folder, the transformers class its config names, and why the head is
    not a standard classifier (None when it is one: ``pipeline("text-classification")`` then runs it)."""

    folder: str
    architecture: str
    not_exportable: str | None
    sentence_transformers: tuple[str, ...] = ()  # files carried over from a sentence-transformers source

    @property
    def exportable(self) -> bool:
        return self.not_exportable is None


# ------------------------------------------------------------------------------------------------ labels


def label_names(spec: HeadSpec) -> tuple[str, ...]:
    """One name per output: the task's label names, ``score`` for regression, ``LABEL_i`` when none were recorded."""
    if spec.label_names:
        return tuple(spec.label_names)
    if spec.num_labels == 1:
        return (REGRESSION_LABEL,)
    return tuple(f"LABEL_{i}" for i in range(spec.num_labels))


def label_maps(spec: HeadSpec) -> tuple[dict[int, str], dict[str, int]]:
    """``id2label`` and ``label2id`` as transformers configs hold them."""
    names = label_names(spec)
    return dict(enumerate(names)), {name: i for i, name in enumerate(names)}


def _is_regression(spec: HeadSpec) -> bool:
    return spec.num_labels == 1 and not spec.label_names


def prediction_rows(logits: torch.Tensor, names: Sequence[str], *, regression: bool,
                    labels: Sequence[int | float | None] | None = None) -> list[dict[str, Any]]:
    """Per example: ``label`` and ``label_name`` (when labels are given), ``prediction`` (class id, or the score for
    regression), ``prediction_name`` and ``p_<label>`` (softmax of the logits) for classification."""
    rows: list[dict[str, Any]] = []
    given = labels is not None and any(label is not None for label in labels)
    if regression:
        scores = logits.float().reshape(len(logits), -1)[:, 0].tolist()
        for i, score in enumerate(scores):
            rows.append({**({"label": labels[i]} if given and labels is not None else {}), "prediction": score})
        return rows
    probabilities = torch.softmax(logits.double(), dim=-1).tolist()
    predicted = logits.argmax(dim=-1).tolist()
    for i, (p, row) in enumerate(zip(predicted, probabilities)):
        out: dict[str, Any] = {}
        if given and labels is not None:
            label = labels[i]
            out["label"] = label
            out["label_name"] = None if label is None else names[int(label)]
        out["prediction"] = int(p)
        out["prediction_name"] = names[int(p)]
        out.update({f"p_{name}": value for name, value in zip(names, row)})
        rows.append(out)
    return rows


# ------------------------------------------------------------------------------------------------ the classifier


def classifier_blocker(spec: HeadSpec, model: nn.Module) -> str | None:
    """Why ``spec`` on ``model`` is not the family's standard ``*ForSequenceClassification`` (every reason, joined
    by "; ", for the model card), or None when it is exactly that model."""
    family = families.family_for(model)
    style = families.pooler_style(model)
    if style is None:
        return (f"{family.name} has no standard classifier of the pooler-then-linear shape "
                "(its own classification head is different)")
    depth, width = families.num_layers(model), families.hidden_size(model)
    held = families.PoolerStyle(spec.pooler_activation, spec.pooler_norm_eps, spec.pooler_norm_bias,
                                spec.pooler_dropout_before)
    reasons = [
        None if spec.pooler else "the head does not use the pooler (--pooler)",
        None if not spec.pooler or held == style else f"its pooler ({_style_words(held)}) is not {family.name}'s "
                                                      f"own ({_style_words(style)})",
        None if spec.head == "linear" else f"the head is {spec.head}, not linear",
        None if spec.token_method in (("cls", None), ("index", 0))
        else f"it reads the {spec.token} token, not the first ([CLS]) one",
        None if spec.layers == (depth,) else f"it reads hidden layer(s) {list(spec.layers)}, not the last ({depth}) "
                                             "alone",
        None if spec.dims == tuple(range(width)) else f"it sees {len(spec.dims)} of the {width} hidden dimensions",
        None if spec.feature_norm != "layernorm" else "the head layer-normalises its features (--feature-norm "
                                                      "layernorm), which the standard classifier cannot hold",
    ]
    found = [r for r in reasons if r is not None]
    return "; ".join(found) if found else None


def _style_words(style: families.PoolerStyle) -> str:
    norm = "" if style.norm_eps is None else ", LayerNorm"
    return f"{style.activation}{norm}{', dropout before' if style.dropout_before else ''}"


def to_sequence_classifier(model: PreTrainedModel, head: SelectingHead) -> PreTrainedModel:
    """The family's standard ``*ForSequenceClassification`` computing what ``head`` on ``model`` computes (on the
    CPU, in eval mode): the encoder's weights, the head's pooler copy and classifier where the family keeps them."""
    import transformers

    spec = head.spec
    blocker = classifier_blocker(spec, model)
    if blocker is not None:
        raise BertscopeError(f"this head is not a standard sequence classifier: {blocker}")
    layout = families.sequence_classifier(model)
    assert layout is not None and head.pooler_dense is not None  # classifier_blocker checked both
    config: Any = copy.deepcopy(model.config)  # a bag of family-specific keys: Any
    class_name = layout.class_name(config.model_type)
    id2label, label2id = label_maps(spec)
    config.architectures = [class_name]
    config.id2label, config.label2id = id2label, label2id
    config.problem_type = "regression" if _is_regression(spec) else "single_label_classification"
    for key in (layout.dropout_key, layout.pooler_dropout_key):
        if key is not None:
            setattr(config, key, spec.dropout)
    for key, value in layout.settings:
        setattr(config, key, value)
    with torch.random.fork_rng(devices=[]):  # a fresh model's initialisation must not move the global RNG
        classifier = getattr(transformers, class_name)(config)
    encoder_state = {k: v.detach().cpu() for k, v in families.base_encoder(model).state_dict().items()}
    loaded = classifier.base_model.load_state_dict(encoder_state, strict=False)
    pooler_prefix = (families.family_for(model).pooler or ("pooler", ""))[0].split(".")[0] + "."
    stray = [k for k in loaded.unexpected_keys if not k.startswith(pooler_prefix)]
    if loaded.missing_keys or stray:  # the table entry does not fit this model: a bug, not a user error
        raise RuntimeError(f"{class_name}: encoder weights do not fit (missing {loaded.missing_keys[:3]}, "
                           f"unexpected {stray[:3]})")
    pairs: list[tuple[str, nn.Module]] = [(layout.pooler, head.pooler_dense),
                                          (layout.classifier, folded_classifier(head))]
    if layout.norm is not None and head.pooler_norm is not None:
        pairs.append((layout.norm, head.pooler_norm))
    with torch.no_grad():
        for path, source in pairs:
            target = classifier.get_submodule(path)
            if type(target) is not type(source) or target.state_dict().keys() != source.state_dict().keys() or any(
                    target.state_dict()[k].shape != v.shape for k, v in source.state_dict().items()):
                raise RuntimeError(f"{class_name}.{path} does not take the head's {type(source).__name__}")
            target.load_state_dict({k: v.detach().cpu() for k, v in source.state_dict().items()})
    result: PreTrainedModel = classifier.eval()
    return result


def folded_classifier(head: SelectingHead) -> nn.Linear:
    """``head``'s linear classifier with its ``standardize`` folded in (``W/std``, ``b - W·mean/std``; float64
    arithmetic), so the plain layer on unnormalised features computes the same logits; the classifier itself when
    the head does not standardise."""
    if head.spec.feature_norm != "standardize":
        return head.classifier
    weight, bias = head.classifier.weight.detach().double().cpu(), head.classifier.bias.detach().double().cpu()
    mean, std = head.feature_mean.detach().double().cpu(), head.feature_std.detach().double().cpu()
    folded = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        scaled = weight / std
        folded.weight.copy_(scaled.float())
        folded.bias.copy_((bias - scaled @ mean).float())
    return folded


@contextlib.contextmanager
def _temporarily(obj: Any, **values: Any) -> Iterator[None]:
    """Set attributes of ``obj`` for the block (the live run's config and tokenizer are left as they were)."""
    before = {k: getattr(obj, k, None) for k in values}
    for k, v in values.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(obj, k, v)


#: The key, in both the encoder's ``config.json`` and ``head_config.json``, of the id of the save that wrote them.
SAVE_ID_KEY = "bertscope_save_id"


def _record_in_json(path: Path, **values: Any) -> None:
    """Add ``values`` to a saved JSON file (keys sorted). In config.json: ``num_labels`` (transformers derives it
    from ``id2label`` and leaves it out; readers of the file and older tools look for it) and the save id."""
    stored = json.loads(path.read_text(encoding="utf-8"))
    stored.update(values)
    write_text_atomic(path, json.dumps(dict(sorted(stored.items())), indent=2) + "\n")


def check_saved_together(folder: str | Path) -> None:
    """Refuse a saved folder whose head and encoder were not written by the same save (e.g. a new encoder beside
    an old head, left by a crashed save of an older bertscope, or files copied in by hand). Folders saved before
    save ids were recorded carry none on either side and pass."""
    folder = Path(folder)
    ids = []
    for name in ("config.json", "head_config.json"):
        try:
            ids.append(json.loads((folder / name).read_text(encoding="utf-8")).get(SAVE_ID_KEY))
        except (OSError, ValueError, AttributeError):
            ids.append(None)
    if ids[0] != ids[1]:
        raise BertscopeError(f"{folder}: the head (head_config.json, save {ids[1] or 'unknown'}) and the encoder "
                             f"(config.json, save {ids[0] or 'unknown'}) come from different saves; save the model "
                             "again (finetune --save-model)")


def save_finetuned(folder: str | Path, model: PreTrainedModel, head: SelectingHead, tokenizer: Any, *, seed: int,
                   max_length: int | None = None, result: FinetuneResult | None = None) -> SavedModel:
    """Write ``folder``: the standard classifier when the head is one (else the encoder, its pooler updated from the
    head's and its config carrying the label names), the tokenizer (``model_max_length`` = ``max_length``), the
    head (``head_config.json`` + ``head.safetensors``) and, given ``result``, the model card.

    Everything is written into a temporary folder beside ``folder`` and renamed into place when complete
    (:func:`bertscope.core.publish.building`): a crash leaves the previous folder or the new one, never a mix, and both
    JSON files carry the same save id (:func:`check_saved_together`)."""
    folder = Path(folder)
    with publish.building(folder) as tmp:
        saved = _save_into(tmp, model, head, tokenizer, seed=seed, max_length=max_length, result=result)
    return dataclasses.replace(saved, folder=str(folder))


def _save_into(folder: Path, model: PreTrainedModel, head: SelectingHead, tokenizer: Any, *, seed: int,
               max_length: int | None, result: FinetuneResult | None) -> SavedModel:
    spec = head.spec
    blocker = classifier_blocker(spec, model)
    id2label, label2id = label_maps(spec)
    lengths = {"model_max_length": max_length} if max_length is not None else {}
    carried: tuple[str, ...] = ()
    with loading.quiet_hugging_face():
        if blocker is None:
            classifier = to_sequence_classifier(model, head)
            classifier.save_pretrained(folder)
            architecture = type(classifier).__name__
        else:
            parts = families.pooler_parts(model)
            if head.pooler_dense is not None and parts is not None:  # plain AutoModel then sees the trained pooler
                with torch.no_grad():
                    parts[0].weight.copy_(head.pooler_dense.weight)
                    parts[0].bias.copy_(head.pooler_dense.bias)
            with _temporarily(model.config, id2label=id2label, label2id=label2id):
                model.save_pretrained(folder)
            architecture = type(model).__name__
            if result is not None:  # the fine-tuned encoder of a sentence-transformers model stays one
                carried = tuple(copy_sentence_transformers_files(result.model_source, folder))
        with _temporarily(tokenizer, **lengths):
            tokenizer.save_pretrained(folder)
    save_id = uuid.uuid4().hex
    _record_in_json(folder / "config.json", num_labels=len(id2label), **{SAVE_ID_KEY: save_id})
    head.save(folder, seed=seed)
    _record_in_json(folder / "head_config.json", **{SAVE_ID_KEY: save_id})
    saved = SavedModel(folder=str(folder), architecture=architecture, not_exportable=blocker,
                       sentence_transformers=carried)
    if result is not None:
        write_model_card(folder, **_card(result, saved))
    return saved


# ------------------------------------------------------------------------------------------------ the model card

#: Options that say where things are or how a run looks, never what it trained: left out of the card's table.
_NOT_IN_CARD = LOCATION_OPTIONS | {"model", "task", "save_model", "cache_features", "eval_batch_size"}


def _changed_options(config: FinetuneConfig) -> dict[str, Any]:
    """The options of ``config`` that differ from finetune's defaults (what makes this run this run)."""
    values = config.to_dict()
    return {o.name: values[o.name] for o in config_options(type(config))
            if o.name not in _NOT_IN_CARD and values[o.name] != o.default}


def _command_line(config: FinetuneConfig) -> str:
    """The ``bertscope finetune`` command that trains this model again."""
    parts = ["bertscope", "finetune"]
    options = {"model": config.encoder.model, "task": config.data.task, **_changed_options(config)}
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join([*parts, "--save-model", "--out", "OUT"])


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _usage(saved: SavedModel, task: glue.GlueTask | None, max_length: int, names: Sequence[str]) -> str:
    pair = task is None or task.is_pair
    first, second = ("A man is playing a guitar.", "A man plays music.") if pair else \
        ("A gripping, beautifully made film.", "")
    example = f'{{"text": "{first}", "text_pair": "{second}"}}' if pair else f'"{first}"'
    bertscope_example = f'[("{first}", "{second}")]' if pair else f'["{first}"]'
    truncation = (f"bertscope truncated every input to {max_length} tokens (pairs longest first); the saved "
                  "tokenizer's `model_max_length` is that length, so `truncation=True` does the same.")
    if saved.exportable:
        return "\n".join([
            f"A plain `{saved.architecture}`: no bertscope needed.", "", "```python",
            "from transformers import pipeline", "",
            'classifier = pipeline("text-classification", model="path/to/this/folder")',
            f"classifier({example}, truncation=True, top_k=None)   # "
            + ("[{'label': 'score', 'score': <the predicted value>}]" if task is not None and task.is_regression
               else f"the probability of every label: {', '.join(names)}"),
            "```", "", truncation, "",
            "`AutoModelForSequenceClassification.from_pretrained(folder)` loads the same model; bertscope's own "
            "`bertscope.finetune.command.load_finetuned(folder)` reads the head files beside it.",
        ])
    return "\n".join([
        f"The head is not a standard transformers classifier: {saved.not_exportable}. The folder's "
        f"`{saved.architecture}` is the fine-tuned encoder alone: `AutoModelForSequenceClassification` or "
        "`pipeline(\"text-classification\")` would put a *random* classifier on it. Load it with bertscope:", "",
        "```python", "from bertscope.finetune.command import load_finetuned", "",
        "model = load_finetuned(\"path/to/this/folder\")",
        f"logits = model.logits({bertscope_example}, max_length={max_length})   # outputs: {', '.join(names)}",
        "```", "",
        "or from the command line (GLUE split, tsv or text file; writes label names and probabilities):", "",
        "```bash",
        f"bertscope predict --model path/to/this/folder{' --task ' + task.name if task else ''} --split validation "
        "--out predictions/",
        "```", "",
        "The encoder (`config.json`, weights) loads with `transformers.AutoModel`; `config.json` carries the label "
        "names (`id2label`); the head is `head_config.json` + `head.safetensors`.",
    ])


def _model_index(result: FinetuneResult, title: str, task: glue.GlueTask) -> list[dict[str, Any]]:
    results = []
    for split, values in result.final.items():
        metrics = [{"type": glue.canonical_metric_name(name), "value": float(value), "name": name}
                   for name, value in values.items()
                   if glue.canonical_metric_name(name) != glue.COMBINED and value == value]
        results.append({"task": {"type": "text-classification", "name": "Text Classification"},
                        "dataset": {"name": f"GLUE {task.dir_name}", "type": glue.HUB_DATASET,
                                    "config": task.hub_config, "split": split}, "metrics": metrics})
    return [{"name": title, "results": results}]


def _card(result: FinetuneResult, saved: SavedModel) -> dict[str, Any]:
    """The :func:`bertscope.models.cards.write_model_card` arguments of a fine-tuned folder."""
    config, selection = result.config, result.selection
    task = glue.get_task(result.task)
    spec = HeadSpec.from_dict(result.head)
    names = label_names(spec)
    base = config.encoder.model or "the embedded default model (all-MiniLM-L6-v2)"
    title = f"{Path(str(config.encoder.model or 'all-MiniLM-L6-v2')).name} fine-tuned on GLUE {task.dir_name}"
    pooler = ", through the pretrained pooler (dense + tanh, trained with it)" if selection["pooler"] else ""
    head_kind = "a linear layer" if spec.head == "linear" else f"an mlp2 head (hidden width {spec.head_hidden})"
    summary = (f"`{base}` fine-tuned with bertscope on GLUE {task.dir_name}: {task.description}. The head reads "
               f"the `{selection['token']}` token vector of hidden layer(s) {selection['layers']} (of "
               f"{selection['num_layers']}; 0 = embeddings), {len(selection['dims'])} of {selection['hidden_size']} "
               f"dimensions{pooler}, into {head_kind}; freezing: {result.freezing['policy']}.")
    if saved.exportable:
        summary += f" That is exactly `{saved.architecture}`, which this folder holds."
    if task.is_regression:
        labels = f"Regression: one output, `{REGRESSION_LABEL}`, the predicted value ({task.description})."
    else:
        labels = _table(("id", "label"), list(enumerate(names)))
    changed = _changed_options(config)
    options = _table(("option", "value"), [(f"`--{k.replace('_', '-')}`", f"`{v}`") for k, v in changed.items()]) \
        if changed else "All options at finetune's defaults."
    fine_tuning = "\n".join([
        f"- base model: `{config.encoder.model or hub_model_id(None)}`",
        f"- token `{selection['token']}`, hidden layer(s) {selection['layers']}, {len(selection['dims'])} "
        f"dimensions (indices in `head_config.json`), pooler: {'yes' if selection['pooler'] else 'no'}, head "
        f"`{spec.head}`", f"- trained on {result.data['train']['num_examples']} {task.name} train examples, "
        f"{len(result.epochs)} epoch(s), seed {config.encoder.seed}", "", options, "", "Reproduce:", "", "```bash",
        _command_line(config), "```"])
    rows = [(split, name, f"{value:.4f}") for split, values in result.final.items() for name, value in values.items()]
    combined = glue.COMBINED
    evaluation = _table(("split", "metric", "value"), rows) + (
        f"\n\nOn {', '.join(str(v['num_examples']) for v in result.data['eval'].values())} dev examples; the "
        f"metrics are the last epoch's; `{combined}` is the GLUE task score (the mean of the official metrics).")
    metadata = {"library_name": "transformers" if saved.exportable else "bertscope",
                "pipeline_tag": "text-classification", "datasets": [glue.HUB_DATASET],
                "tags": ["text-classification", "glue", task.name],
                "model-index": _model_index(result, title, task)}
    base_model = hub_model_id(config.encoder.model)
    return {"title": title, "summary": summary,
            "sections": {"Labels": labels, "How to use": _usage(saved, task, config.encoder.max_length, names),
                         "Fine-tuning": fine_tuning, "Dev results": evaluation},
            "metadata": metadata, "source": result.model_source, "base_model": base_model}

