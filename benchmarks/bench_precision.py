"""Which form of reduced-precision training pays on this machine: one training step of the same model, side by side.

Every form starts from the same weights and trains on the same length-grouped batches of real sentences (SST-2
training sentences when a local GLUE copy is at hand, else the built-in sample), with the optimizer bertscope uses
(AdamW, gradient clipping at 1.0), and is timed over the same steps after a warm-up:

* ``fp32``: float32 weights and compute (bertscope's default);
* ``autocast``: float32 master weights, ``torch.autocast`` to bf16 around the forward pass (``--dtype bfloat16`` today);
* ``bf16-weights``: the model itself in bf16, a float32 master copy in the optimizer (gradients cast up, updated
  weights copied down after each step), so no cast runs inside the forward;
* ``compiled-fp32`` / ``compiled-autocast`` (``--compile``): the two first forms under ``torch.compile`` (its one-time
  compile seconds are reported apart, not in the step time).

Reported per form: seconds per step, examples per second, the speed-up over fp32, the loss after the timed steps
(each form's own trajectory: they should stay close), and the device's native support of bf16
(:mod:`bertscope.core.precision`), beside the measured GEMM peaks in fp32 and bf16 (:mod:`benchmarks.peak`).

    python -m benchmarks.bench_precision                          # embedded MiniLM, batch 32, 6 timed steps
    python -m benchmarks.bench_precision --compile --steps 10
    python -m benchmarks.bench_precision --small                  # tiny model, a smoke test (seconds)
    python -m benchmarks.bench_precision --device cuda --model ./bert-base --compile

The summary is printed and written to ``benchmarks/results/bench_precision.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import RESULTS, find_glue_dir
from benchmarks.peak import efficiency, measure_peak
from bertscope.core import precision
from bertscope.core.device import resolve_device
from bertscope.core.results import environment_info, write_json_atomic
from bertscope.data import glue
from bertscope.data.texts import load_texts
from bertscope.models import flops, loading

FORMS = ("fp32", "autocast", "bf16-weights")
COMPILED = ("compiled-fp32", "compiled-autocast")


def sentences(args: argparse.Namespace) -> list[str]:
    """Real training sentences: SST-2's (local GLUE) or the built-in sample's."""
    glue_dir = find_glue_dir(args.data_dir)
    if glue_dir is not None and not args.small:
        split = glue.load_split(glue.get_task("sst2"), "train", glue_dir, args.batch_size * (args.steps + 2), 0)
        return [ex.texts[0] for ex in split.examples]
    return list(load_texts(seed=0).sentences)


def make_batches(args: argparse.Namespace, tokenizer: Any) -> list[dict[str, torch.Tensor]]:
    texts = sentences(args)
    need = args.batch_size * (args.steps + args.warmup)
    texts = (texts * (need // max(len(texts), 1) + 1))[:need]
    texts.sort(key=len)  # length-grouped, as bertscope batches them
    batches = []
    generator = torch.Generator().manual_seed(0)
    for start in range(0, need, args.batch_size):
        enc = tokenizer(texts[start:start + args.batch_size], padding=True, truncation=True,
                        max_length=args.max_length, return_tensors="pt")
        labels = torch.randint(0, 2, (enc["input_ids"].shape[0],), generator=generator)
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


class Stepper:
    """One training step of encoder + linear head on the first token, in one precision form."""

    def __init__(self, encoder: torch.nn.Module, form: str, device: torch.device) -> None:
        self.form, self.device = form, device
        torch.manual_seed(0)
        self.encoder = copy.deepcopy(encoder).to(device).train()
        hidden = self.encoder.config.hidden_size
        self.head = torch.nn.Linear(hidden, 2).to(device)
        params = [*self.encoder.parameters(), *self.head.parameters()]
        if form == "bf16-weights":
            self.encoder.to(torch.bfloat16)
            self.head.to(torch.bfloat16)
            self.model_params = [*self.encoder.parameters(), *self.head.parameters()]
            self.master = [p.detach().float().clone().requires_grad_(True) for p in self.model_params]
            params = self.master
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01, fused=True)
        self.autocast = form.endswith("autocast")
        self.forward: Callable[[dict[str, torch.Tensor]], torch.Tensor] = self._forward
        if form.startswith("compiled"):
            self.forward = torch.compile(self._forward, dynamic=True)

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        context = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast
                   else contextlib.nullcontext())
        with context:
            hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            logits = self.head(hidden.last_hidden_state[:, 0])
        return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])

    def step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        loss = self.forward(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.form == "bf16-weights":
            for p in self.model_params:
                p.grad = None
        loss.backward()
        if self.form == "bf16-weights":
            for low, master in zip(self.model_params, self.master):
                master.grad = None if low.grad is None else low.grad.float()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        if self.form == "bf16-weights":
            with torch.no_grad():
                torch._foreach_copy_(self.model_params, self.master)
        return loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_form(encoder: torch.nn.Module, form: str, batches: list[dict[str, torch.Tensor]],
             warmup: int, device: torch.device) -> dict[str, Any]:
    stepper = Stepper(encoder, form, device)
    started = time.perf_counter()
    for batch in batches[:warmup]:
        stepper.step(batch)
    _sync(device)
    warm_seconds = time.perf_counter() - started
    times, losses = [], []
    for batch in batches[warmup:]:
        t = time.perf_counter()
        losses.append(float(stepper.step(batch)))  # float() waits for the device: the step's real time
        times.append(time.perf_counter() - t)
    examples = sum(int(b["labels"].shape[0]) for b in batches[warmup:])
    return {"seconds_per_step": statistics.median(times), "total_seconds": sum(times),
            "examples_per_second": examples / sum(times), "warmup_seconds": warm_seconds,
            "final_loss": losses[-1], "mean_loss": statistics.fmean(losses)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: the embedded MiniLM-L6")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per form")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per form first (compile happens here)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile forms")
    parser.add_argument("--forms", default=None, help="comma list (default: every form)")
    parser.add_argument("--small", action="store_true", help="a tiny random BERT and 2 steps: a smoke test")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS / "bench_precision.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = loading.load_tokenizer(args.model)
    if args.small:
        import transformers

        args.steps, args.batch_size = min(args.steps, 2), min(args.batch_size, 8)
        encoder = transformers.BertModel(transformers.BertConfig(
            num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
            vocab_size=tokenizer.vocab_size))
    else:
        encoder = loading.load_model(args.model, "base").model
    forms = [f.strip() for f in args.forms.split(",")] if args.forms else [*FORMS, *(COMPILED if args.compile else ())]
    unknown = set(forms) - {*FORMS, *COMPILED}
    if unknown:
        raise SystemExit(f"unknown form(s) {sorted(unknown)}; choose from {', '.join((*FORMS, *COMPILED))}")
    device = resolve_device(args.device)
    batches = make_batches(args, tokenizer)
    shape = flops.EncoderShape.from_config(encoder.config)
    peak = measure_peak(shape.hidden, shape.intermediate, device=str(device), tokens=256 if args.small else 2048,
                        min_seconds=0.02 if args.small else 0.1)
    timed = batches[args.warmup:]
    lengths = [int(n) for b in timed for n in b["attention_mask"].sum(dim=1).tolist()]
    step_flops = float(flops.training_flops(flops.encoder_forward_flops(shape, lengths)))
    results: dict[str, dict[str, Any]] = {}
    native, support = precision.native_support("bfloat16", device)
    for form in forms:
        print(f"{form} ...", flush=True)
        results[form] = run_form(encoder, form, batches, args.warmup, device)
        r = results[form]
        report = efficiency(peak, "float32" if form.endswith("fp32") else "bfloat16", {form: step_flops},
                            {form: r["total_seconds"]})
        r["achieved_flops"] = report["achieved_flops"][form]
        r["fraction_of_peak"] = report["fraction_of_peak"][form]
        r["peak_dtype"] = report["peak_dtype"]
        print(f"  {1000 * r['seconds_per_step']:8.1f} ms/step  {r['examples_per_second']:7.1f} ex/s  "
              f"loss {r['final_loss']:.4f}  warm-up {r['warmup_seconds']:.1f} s", flush=True)
    base = results.get("fp32")
    if base is not None:
        for r in results.values():
            r["speedup_vs_fp32"] = base["total_seconds"] / r["total_seconds"]
    summary = {"benchmark": "one training step per precision form", "model": args.model or "embedded MiniLM-L6",
               "small": args.small, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
               "device": str(device), "threads": torch.get_num_threads(), "bf16_native": native, "bf16_support": support,
               "model_flops_timed": step_flops, "forms": results, "peak": peak,
               "gemm_bf16_over_fp32": (peak["best"]["bf16"] / peak["best"]["fp32"]
                                       if "bf16" in peak["best"] else None),
               "fastest": max(results, key=lambda f: results[f]["examples_per_second"]),
               "environment": environment_info()}
    print(f"bf16 on {device}: {support}; GEMM bf16/fp32 {summary['gemm_bf16_over_fp32'] or float('nan'):.2f}x")
    for form, r in results.items():
        print(f"  {form:18s} {r.get('speedup_vs_fp32', float('nan')):6.2f}x fp32")
    print(f"fastest: {summary['fastest']}")
    write_json_atomic(args.out, summary)
    print(f"written {args.out}")
    return summary


if __name__ == "__main__":
    main()
