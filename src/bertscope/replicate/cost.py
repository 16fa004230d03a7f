"""What a replication costs: the model FLOPs of each run of its protocol, the GPU hours they make at a stated
throughput (printed before ``full`` starts and by every ``--dry-run``), and, once runs are done, the fraction of
their wall time that was model compute.

Why: ``full`` is written for a GPU box; a user deciding whether to start it needs its size in GPU hours, and a
user waiting on a CPU needs to know whether the time goes into the model or around it (process start, loading,
tokenisation, evaluation, store writes).

The count (:func:`run_flops`) uses :mod:`bertscope.models.flops` on each run's effective options,
``--max-train``/``--max-eval`` or else the GLUE split sizes (:data:`bertscope.data.glue.GLUE_SIZES`). Before the
runs (the estimate) every example is taken at the run's ``--max-length`` tokens, an upper bound; for the compute
fraction of done runs each example is taken at the mean real length of its split (:class:`RealLengths`: the split
tokenised with the run's tokenizer, truncated at ``--max-length``), so padding and truncated tails are never counted
as model compute:

* fine-tuning (``finetune`` and the studies): per head, ``epochs x train`` examples at three forwards (forward and
  backward) plus one forward of the dev examples; a frozen encoder (``--freeze encoder``) is one forward of train and
  dev (its features are cached). Heads per run: tokens: one per strategy; dims: the all-dimension head plus
  ``--samples`` per K below the hidden size; layers: one per scanned hidden state, through the layers up to it
  (the encoder above the layer a head reads is not run); cross: one per stage (its task's data). The head's own matmuls are left out (a linear head is under 0.1% of an encoder's FLOPs).
* ``reconstruct``: one forward of the measured sentences (plus the tuned lens's training sentences); ``layer-scan``:
  the original and one variant per layer; ``deepen`` copies weights (0).

A done run counts only the compute it did itself (:func:`computed_share`): a study's sub-runs loaded from an earlier
run or taken from a sibling run folder, and a frozen encoder's features read from the feature cache, were computed
elsewhere, so their FLOPs are left out of this run's count (they would otherwise push its fraction over 1).

The compute fraction of a done run is its FLOP count over (a measured GEMM peak of this device at the runs' dtype,
the model's shapes and the torch threads each worker ran with, :mod:`bertscope.core.peak`, times the run's wall
seconds); the total is the sum of the FLOPs over the peak times the sum of the seconds (each run weighted by its
wall time).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_hidden_states, parse_k_list
from bertscope.data.glue import GLUE_SIZES
from bertscope.models.flops import EncoderShape, encoder_forward_flops, training_flops

__all__ = [
    "DEFAULT_GPU_TFLOPS",
    "DEFAULT_GPU_UTILISATION",
    "Estimate",
    "RealLengths",
    "compute_fractions",
    "computed_share",
    "estimate_runs",
    "estimate_spec",
    "fraction_line",
    "measured_peak",
    "model_shape",
    "run_flops",
]

#: the stated GPU peak (TFLOP/s): an NVIDIA A100's dense bf16/fp16 tensor-core peak
DEFAULT_GPU_TFLOPS = 312.0
#: the share of that peak a fine-tuning run is assumed to sustain (model FLOPs utilisation)
DEFAULT_GPU_UTILISATION = 0.4


_FINETUNING = ("finetune", "tokens", "dims", "layers", "cross")


def model_shape(model: str | None, seen: dict[str | None, EncoderShape] | None = None) -> EncoderShape:
    """The encoder shape of a checkpoint (None: the embedded default), from its config file alone; ``seen`` keeps
    the shapes read during one count (never across calls: a folder may be rewritten between invocations)."""
    from bertscope.models.loading import load_config

    if seen is None:
        seen = {}
    if model not in seen:
        seen[model] = EncoderShape.from_config(load_config(model))
    return seen[model]


def _count(options: Mapping[str, Any], key: str, task: str, split: int) -> int:
    value = options.get(key)
    if value:
        return int(value)
    if task not in GLUE_SIZES:
        raise BertscopeError(f"no GLUE size known for task {task!r}; give --max-train/--max-eval")
    return GLUE_SIZES[task][split]


def _heads(command: str, options: Mapping[str, Any], shape: EncoderShape) -> int:
    if command == "tokens":
        from bertscope.studies.config import TokensConfig
        from bertscope.studies.tokens import TOKENS

        return len(TOKENS.values(TokensConfig.from_dict(dict(options))))
    if command == "dims":
        ks = parse_k_list(str(options.get("k") or "all"), shape.hidden)
        return 1 + int(options.get("samples") or 1) * sum(1 for k in ks if k < shape.hidden)
    if command == "layers":
        return len(parse_hidden_states(options.get("layers"), shape.layers, option="--layers", default_all=True))
    return 1


#: (task, split index 0 train / 1 dev) -> tokens per example; None: the run's --max-length (an upper bound)
Lengths = Callable[[str, int], float]


class RealLengths:
    """The mean real token count of a GLUE split's examples, tokenised with a model's tokenizer and truncated at a
    maximum length; computed once per (model, task, split, max length) of one count (a few seconds per split)."""

    def __init__(self, model: str | None, max_length: int, data_dir: str | None) -> None:
        self.model, self.max_length, self.data_dir = model, max_length, data_dir
        self._cache: dict[tuple[str, int], float] = {}

    def __call__(self, task: str, split: int) -> float:
        if (task, split) not in self._cache:
            from bertscope.data.glue import load_split
            from bertscope.models.loading import load_tokenizer

            tokenizer = load_tokenizer(self.model)
            name = "train" if split == 0 else ("validation_matched" if task == "mnli" else "validation")
            examples = load_split(task, name, self.data_dir, max_examples=2000, seed=0).examples
            texts = [ex.texts for ex in examples]
            encoded = tokenizer([t[0] for t in texts], *([[t[1] for t in texts]] if len(texts[0]) > 1 else []),
                                truncation=True, max_length=self.max_length)
            self._cache[(task, split)] = sum(len(ids) for ids in encoded["input_ids"]) / max(1, len(texts))
        return self._cache[(task, split)]


def run_flops(command: str, options: Mapping[str, Any], shape: EncoderShape, lengths: Lengths | None = None) -> int:
    """Model FLOPs of one run from its command, effective options and encoder shape (see the module docstring);
    ``lengths``: tokens per example of each split (default: every example at ``--max-length``)."""
    max_length = int(options.get("max_length") or 128)

    def forward(task: str, split: int, layers: int | None = None) -> int:  # one example
        length = max_length if lengths is None else round(lengths(task, split))
        return encoder_forward_flops(shape, [length], layers) if length and layers != 0 else 0

    if command in ("reconstruct", "layer-scan"):
        task = str(options.get("task") or "sst2")
        texts = _count(options, "max_examples", task, 1)
        if options.get("lens") == "tuned":
            texts += int(options.get("lens_sentences") or 0)
        passes = 1 + shape.layers if command == "layer-scan" else 1
        return passes * texts * encoder_forward_flops(shape, [max_length])
    if command not in _FINETUNING:
        return 0  # deepen copies weights; a plugin's command is not counted
    tasks = str(options.get("tasks") if command == "cross" else options.get("task") or "").split(",")
    depths: list[int | None] = [None] * _heads(command, options, shape)
    if command == "layers":  # a head on hidden state h runs the encoder up to h only
        depths = list(parse_hidden_states(options.get("layers"), shape.layers, option="--layers", default_all=True))
    total = 0
    for task in (t.strip() for t in tasks if t.strip()):
        train = _count(options, "max_train", task, 0)
        dev = _count(options, "max_eval", task, 1)
        for depth in depths:
            if options.get("freeze") == "encoder":
                total += train * forward(task, 0, depth) + dev * forward(task, 1, depth)
            else:
                total += (int(options.get("epochs") or 1) * train * training_flops(forward(task, 0, depth))
                          + dev * forward(task, 1, depth))
    return total


def computed_share(command: str, options: Mapping[str, Any], shape: EncoderShape) -> float:
    """The share of :func:`run_flops`'s count that a done run computed itself, read from its result file in
    ``options["out"]``: a study's sub-runs marked ``resumed`` (loaded from an earlier run, or reused from a sibling
    run folder) are left out, weighted by the layers each runs through; a frozen-encoder ``finetune`` counts the
    examples its encoder actually ran (``features``' ``encoder_examples``; cached ones ran elsewhere). 1.0 when the
    file is missing or says nothing (the count stands as it is)."""
    out = options.get("out")
    if not out:
        return 1.0
    name = "results.json" if command == "finetune" else f"{command}.json"
    try:
        payload = json.loads((Path(str(out)) / name).read_text())
    except (OSError, ValueError):
        return 1.0
    if command == "finetune":
        splits = (payload.get("features") or {}).get("splits") or {}
        if options.get("freeze") != "encoder" or not splits:
            return 1.0
        ran = sum(int(s.get("encoder_examples") or 0) for s in splits.values())
        total = sum(int(s.get("num_examples") or 0) for s in splits.values())
        return ran / total if total else 1.0
    runs = [r for r in payload.get("runs") or [] if isinstance(r, Mapping)]
    if not runs:
        return 1.0

    def depth(run: Mapping[str, Any]) -> int:
        layers = run.get("layers") if command == "layers" else None
        return max(int(x) for x in layers) if isinstance(layers, list) and layers else shape.layers

    total = sum(depth(r) for r in runs)
    return sum(depth(r) for r in runs if not (r.get("resumed") or r.get("reused_from"))) / total if total else 1.0


def _deepened(options: Mapping[str, Any]) -> int:
    """Layers a deepen run adds (duplicates minus removals)."""
    return sum(len([p for p in str(options.get(k) or "").split(",") if p.strip()]) * sign
               for k, sign in (("duplicate", 1), ("remove", -1)))


@dataclass(frozen=True)
class Estimate:
    """The protocol's size: run count, model FLOPs and GPU hours at ``gpu_tflops x utilisation``."""

    runs: int
    flops: float
    gpu_tflops: float
    utilisation: float
    uncounted: tuple[str, ...] = ()  # runs whose model's shape could not be read (e.g. a hub id offline)

    @property
    def gpu_hours(self) -> float:
        return self.flops / (self.gpu_tflops * 1e12 * self.utilisation) / 3600

    def line(self) -> str:
        text = (f"{self.runs} runs, about {self.gpu_hours:.3g} GPU hours: {self.flops:.3g} model FLOPs at "
                f"{self.utilisation:.0%} of {self.gpu_tflops:g} TFLOP/s (--gpu-tflops, --gpu-utilisation; "
                f"the default is an A100's bf16 peak), every example at --max-length tokens (an upper bound)")
        if self.uncounted:
            text += f"; {len(self.uncounted)} run(s) not counted (their model's config could not be read)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "model_flops": self.flops, "gpu_hours": self.gpu_hours,
                "gpu_tflops": self.gpu_tflops, "utilisation": self.utilisation, "uncounted": list(self.uncounted),
                "assumes": "every example at --max-length tokens; GLUE split sizes where no --max-train/--max-eval; "
                           "training = 3 forwards; see bertscope.replicate.cost"}


def estimate_runs(runs: Sequence[Any], *, gpu_tflops: float = DEFAULT_GPU_TFLOPS,
                  utilisation: float = DEFAULT_GPU_UTILISATION) -> Estimate:
    """The estimate of a spec's runs (:class:`bertscope.sweep.spec.Run`: id, command, options, depends_on); a run on
    a deepen pre-step's output gets the pre-step's model shape with its added layers."""
    by_id = {r.id: r for r in runs}
    seen: dict[str | None, EncoderShape] = {}
    flops = 0
    uncounted: list[str] = []
    for run in runs:
        try:
            flops += run_flops(run.command, run.options, _shape_of(run, by_id, seen))
        except (BertscopeError, OSError, ValueError):
            uncounted.append(run.id)
    return Estimate(len(runs), float(flops), gpu_tflops, utilisation, tuple(uncounted))


def _shape_of(run: Any, by_id: Mapping[str, Any], seen: dict[str | None, EncoderShape]) -> EncoderShape:
    model = run.options.get("model")
    for pre in (by_id.get(d) for d in run.depends_on):
        if pre is not None and pre.command == "deepen" and model == pre.options.get("out"):
            base = model_shape(pre.options.get("model"), seen)
            return EncoderShape(base.layers + _deepened(pre.options), base.hidden, base.intermediate)
    return model_shape(model, seen)


def estimate_spec(spec: Mapping[str, Any], runs_dir: str | Path, *, gpu_tflops: float, utilisation: float,
                  announce: bool) -> Estimate:
    """The estimate of a sweep spec's runs (the runs ``sweep --dry-run`` lists); with ``announce`` its line goes to
    stderr before anything runs (stdout stays the command's result)."""
    from bertscope.sweep.spec import parse_spec

    estimate = estimate_runs(parse_spec(dict(spec), runs_dir=runs_dir, dry_run=True).runs, gpu_tflops=gpu_tflops,
                             utilisation=utilisation)
    if announce:
        print(f"replicate: {estimate.line()}", file=sys.stderr, flush=True)
    return estimate


@functools.cache
def _peak(device: str, dtype: str, threads: int, hidden: int, intermediate: int) -> dict[str, Any]:
    from bertscope.core.peak import measure_peak

    return measure_peak(hidden, intermediate, tokens=512, device=device, dtypes=(dtype,), repeats=2,
                        min_seconds=0.03)


def measured_peak(device: str, dtype: str, shape: EncoderShape, threads: int | None = None) -> dict[str, Any]:
    """The GEMM peak of ``device`` at ``dtype`` and the model's shapes with ``threads`` torch threads (default:
    this process's), measured once per process and device, dtype, threads and shape (about a third of a second on
    a CPU)."""
    import torch

    from bertscope.core.device import resolve_device

    resolved = str(resolve_device(device))
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        return _peak(resolved, dtype, torch.get_num_threads(), shape.hidden, shape.intermediate)
    finally:
        torch.set_num_threads(before)


def compute_fractions(runs: Iterable[Mapping[str, Any]], *, threads: int | None = None) -> dict[str, Any]:
    """For claims.json's run entries (``id``, ``command``, ``status``, ``duration``, ``options``): the model FLOPs
    of each done run and its fraction of wall time in model compute, and the total (see the module docstring).
    ``threads``: the torch threads each worker ran with (the peak is measured with as many). Adds ``model_flops``
    and ``compute_fraction`` to each done entry in place; returns the total and the peak."""
    counted: list[tuple[Mapping[str, Any], int, float]] = []
    peak: dict[str, Any] | None = None
    seen: dict[str | None, EncoderShape] = {}
    lengths: dict[tuple[Any, ...], RealLengths] = {}
    for run in runs:
        options = run.get("options") or {}
        if run.get("status") != "done" or not run.get("duration"):
            continue
        key = (options.get("model"), int(options.get("max_length") or 128), options.get("data_dir"))
        try:
            shape = model_shape(options.get("model"), seen)
            command = str(run.get("command"))
            flops = run_flops(command, options, shape, lengths.setdefault(key, RealLengths(*key)))
            flops = round(flops * computed_share(command, options, shape))
        except (BertscopeError, OSError, ValueError):
            continue
        if peak is None:
            dtype = str(options.get("dtype") or "float32")
            peak = measured_peak(str(options.get("device") or "auto"), dtype if dtype != "auto" else "float32",
                                 shape, threads)
        counted.append((run, flops, float(run["duration"])))
    if peak is None or not peak["best"]:
        return {"fraction": None, "peak": None, "note": "no done run could be counted"}
    best = float(max(peak["best"].values()))
    for run, flops, seconds in counted:
        run["model_flops"] = flops  # type: ignore[index]
        run["compute_fraction"] = flops / (best * seconds)  # type: ignore[index]
    flops_total = sum(f for _, f, _ in counted)
    seconds_total = sum(s for _, _, s in counted)
    return {"fraction": flops_total / (best * seconds_total), "model_flops": flops_total,
            "run_seconds": seconds_total, "runs": len(counted), "peak_flops": best,
            "peak": {k: peak[k] for k in ("device", "device_name", "threads", "tokens", "hidden", "intermediate",
                                          "best")},
            "rest": "process start, model and data loading, tokenisation, evaluation, store writes"}


def fraction_line(compute: Mapping[str, Any]) -> str:
    """One line for the CLI summary and the claims.md header."""
    if compute.get("fraction") is None:
        return "compute fraction: not measured (no done run could be counted)"
    peak = compute["peak"]
    return (f"model compute {compute['fraction']:.1%} of the runs' wall time ({compute['model_flops']:.3g} FLOPs over "
            f"{compute['run_seconds']:.0f} s at a measured {compute['peak_flops'] / 1e9:.1f} GFLOP/s peak, "
            f"{peak['device']}, {peak['threads']} thread(s)); the rest: {compute['rest']}")
