"""bertscope finetune vs a Hugging Face ``Trainer`` run of the same model, subset, hyper-parameters, precision, seed.

Three runs side by side in one process (same threads, same moment):

* ``trainer-padded``: ``run_glue.py`` defaults, every example padded to ``--max-length``;
* ``trainer-dynamic``: ``DataCollatorWithPadding`` + length-grouped sampling (a tuned Trainer);
* ``bertscope``: ``bertscope finetune`` with its defaults (dynamic padding, length-grouped batches).

Reported: training examples per second (train loop only: tokenisation and evaluation excluded on both sides) and the
dev metric of each, then the ratios. ``--layer-check`` adds bertscope runs reading the middle and the last layer (the
layers above the one read are not computed, so the middle one should cost about half).

    python -m benchmarks.bench_finetune --task sst2 --train 2000 --seeds 0 --abba --layer-check
    python -m benchmarks.bench_finetune --train 200 --eval 200 --padded-train 64 --layer-check   # quick

The summary is printed and written to ``benchmarks/results/bench_finetune.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import torch

from benchmarks.common import RESULTS, require_glue_dir
from benchmarks.peak import efficiency, measure_peak, print_efficiency
from bertscope import api
from bertscope.core import precision
from bertscope.core.results import environment_info, write_json_atomic
from bertscope.data import glue
from bertscope.models import families, flops, loading


def run_trainer(args: argparse.Namespace, seed: int, *, padded: bool, max_train: int) -> dict[str, Any]:
    """A Trainer run as run_glue.py does it (padded) or tuned (dynamic padding + group_by_length)."""
    import datasets
    import transformers

    task = glue.get_task(args.task)
    train = glue.load_split(task, "train", args.data_dir, max_train, seed)
    dev = glue.load_split(task, task.default_eval_split, args.data_dir, args.eval, seed)
    source = loading.resolve_model_source(args.model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    transformers.set_seed(seed)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(source, num_labels=task.num_labels)

    def to_dataset(split: glue.GlueSplit) -> datasets.Dataset:
        columns = list(zip(*(ex.texts for ex in split.examples)))
        enc = tokenizer(*columns[:2], truncation=True, max_length=args.max_length,
                        padding="max_length" if padded else False)
        data = dict(enc)
        data["labels"] = [ex.label for ex in split.examples]
        return datasets.Dataset.from_dict(data)

    train_ds, dev_ds = to_dataset(train), to_dataset(dev)
    with tempfile.TemporaryDirectory() as tmp:
        targs = transformers.TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
            learning_rate=args.lr, num_train_epochs=args.epochs, weight_decay=args.weight_decay,
            warmup_steps=args.warmup_ratio, max_grad_norm=args.grad_clip, seed=seed, data_seed=seed,
            report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="no", use_cpu=args.device == "cpu",
            dataloader_num_workers=0, train_sampling_strategy="random" if padded else "group_by_length",
            disable_tqdm=True,
            bf16=args.trainer_dtype == "bfloat16", fp16=args.trainer_dtype == "float16",
        )
        collator = (transformers.default_data_collator if padded
                    else transformers.DataCollatorWithPadding(tokenizer))
        trainer = transformers.Trainer(model=model, args=targs, train_dataset=train_ds, data_collator=collator)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        output = trainer.predict(dev_ds)
        eval_seconds = time.perf_counter() - start
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    preds = logits.squeeze(-1).tolist() if task.is_regression else logits.argmax(-1).tolist()
    # transformers 5 also length-groups the *prediction* order under group_by_length: score against the labels the
    # Trainer returns in its own order, not the split's order.
    labels = output.label_ids.reshape(-1).tolist()
    metrics = glue.compute_metrics(task, preds, labels)
    examples = len(train) * args.epochs
    return {"train_examples": examples, "train_seconds": train_seconds, "examples_per_second": examples / train_seconds,
            "eval_seconds": eval_seconds, "dev": metrics}


def run_bertscope(args: argparse.Namespace, seed: int, *, layer: str = "-1", max_train: int) -> dict[str, Any]:
    result = api.finetune(task=args.task, model=args.model, data_dir=args.data_dir, max_train=max_train,
                          max_eval=args.eval, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, grad_clip=args.grad_clip,
                          max_length=args.max_length, seed=seed, device=args.device, dtype=args.dtype, layer=layer,
                          pooler=args.pooler, progress=False)
    t = result.timing
    return {"train_examples": t["train_examples"], "train_seconds": t["train_seconds"],
            "examples_per_second": t["train_examples_per_second"], "eval_seconds": t["eval_seconds"],
            "dev": next(iter(result.final.values()))}


def _score(dev: dict[str, float]) -> float:
    """The task's headline dev metric (``combined_score``; ``score`` in older metric dicts)."""
    return dev["combined_score"] if "combined_score" in dev else dev["score"]


def training_model_flops(args: argparse.Namespace, seed: int, max_train: int) -> int:
    """Model FLOPs of the training loop: 3 x the encoder forward over the real (truncated, unpadded) tokens, per epoch."""
    import transformers

    task = glue.get_task(args.task)
    train = glue.load_split(task, "train", args.data_dir, max_train, seed)
    source = loading.resolve_model_source(args.model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    columns = list(zip(*(ex.texts for ex in train.examples)))
    lengths = [len(ids) for ids in tokenizer(*columns[:2], truncation=True, max_length=args.max_length)["input_ids"]]
    shape = flops.EncoderShape.from_config(transformers.AutoConfig.from_pretrained(source))
    return args.epochs * flops.training_flops(flops.encoder_forward_flops(shape, lengths))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--model", default=None, help="default: the embedded MiniLM-L6")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train", type=int, default=2000, help="training examples (seeded subset)")
    parser.add_argument("--eval", type=int, default=None, help="dev examples (default: the whole dev split)")
    parser.add_argument("--padded-train", type=int, default=None,
                        help="cap the slow padded Trainer at this many training examples (throughput only)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seeds", default="0", help="comma list")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="bertscope's --dtype")
    parser.add_argument("--trainer-dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="the Trainer's precision (default: --dtype); the bf16 goal compares bertscope "
                             "--dtype bfloat16 with the Trainer in float32")
    parser.add_argument("--pooler", action="store_true", help="bertscope head through the pretrained pooler")
    parser.add_argument("--skip", default="", help="comma list of runs to skip: trainer-padded,trainer-dynamic")
    parser.add_argument("--layer-check", action="store_true", help="also time reading the middle vs last layer")
    parser.add_argument("--layer-train", type=int, default=None, help="training examples of the layer check "
                                                                       "(default: --train)")
    parser.add_argument("--abba", action="store_true",
                        help="run bertscope and the tuned Trainer twice in A-B-B-A order (and the layer check "
                             "last-middle-middle-last) and average, so a change of machine load cancels out")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(RESULTS / "bench_finetune.json"))
    args = parser.parse_args(argv)
    args.data_dir = require_glue_dir(args.data_dir)
    args.trainer_dtype = args.trainer_dtype or args.dtype
    seeds = [int(s) for s in args.seeds.split(",")]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = flops.EncoderShape.from_config(loading.load_model(args.model, "base").model.config)
    peak = measure_peak(shape.hidden, shape.intermediate, device=args.device)

    runs: dict[str, list[dict[str, Any]]] = {"bertscope": [], "trainer-dynamic": [], "trainer-padded": []}
    for seed in seeds:
        print(f"seed {seed}: bertscope ...", flush=True)
        runs["bertscope"].append(run_bertscope(args, seed, max_train=args.train))
        print(f"  {runs['bertscope'][-1]['examples_per_second']:.1f} ex/s  {runs['bertscope'][-1]['dev']}", flush=True)
        if "trainer-dynamic" not in skip:
            print(f"seed {seed}: Trainer, dynamic padding + group_by_length ...", flush=True)
            runs["trainer-dynamic"].append(run_trainer(args, seed, padded=False, max_train=args.train))
            r = runs["trainer-dynamic"][-1]
            print(f"  {r['examples_per_second']:.1f} ex/s  {r['dev']}", flush=True)
        if "trainer-padded" not in skip:
            print(f"seed {seed}: Trainer, padded to {args.max_length} (run_glue defaults) ...", flush=True)
            runs["trainer-padded"].append(run_trainer(args, seed, padded=True,
                                                      max_train=args.padded_train or args.train))
            r = runs["trainer-padded"][-1]
            print(f"  {r['examples_per_second']:.1f} ex/s  {r['dev']}", flush=True)
        if args.abba:
            if "trainer-dynamic" not in skip:
                print(f"seed {seed}: Trainer, dynamic padding + group_by_length (again) ...", flush=True)
                runs["trainer-dynamic"].append(run_trainer(args, seed, padded=False, max_train=args.train))
                r = runs["trainer-dynamic"][-1]
                print(f"  {r['examples_per_second']:.1f} ex/s  {r['dev']}", flush=True)
            print(f"seed {seed}: bertscope (again) ...", flush=True)
            runs["bertscope"].append(run_bertscope(args, seed, max_train=args.train))
            r = runs["bertscope"][-1]
            print(f"  {r['examples_per_second']:.1f} ex/s  {r['dev']}", flush=True)

    def mean(name: str, key: str) -> float | None:
        values = [r[key] if key != "score" else _score(r["dev"]) for r in runs[name]]
        return statistics.fmean(values) if values else None

    summary: dict[str, Any] = {"args": vars(args), "threads": torch.get_num_threads(), "runs": runs,
                               "environment": environment_info()}
    ours = mean("bertscope", "examples_per_second")
    for name in ("trainer-dynamic", "trainer-padded"):
        theirs = mean(name, "examples_per_second")
        if theirs:
            summary[f"speedup_vs_{name}"] = ours / theirs  # type: ignore[operator]
    summary["mean_score"] = {name: mean(name, "score") for name in runs if runs[name]}
    flops_cache: dict[tuple[int, int], int] = {}
    model_flops, seconds = {}, {}
    for name in runs:
        if runs[name]:
            total = 0
            for index, r in enumerate(runs[name]):
                # runs hold seed after seed (twice each under --abba, except the padded Trainer)
                key = (seeds[index // (2 if args.abba and name != "trainer-padded" else 1)], r["train_examples"])
                if key not in flops_cache:
                    flops_cache[key] = training_model_flops(args, key[0], key[1] // args.epochs)
                total += flops_cache[key]
            model_flops[name] = float(total)
            seconds[name] = sum(r["train_seconds"] for r in runs[name])
    summary["peak"] = peak
    if args.trainer_dtype == args.dtype:
        summary["efficiency"] = efficiency(peak, args.dtype, model_flops, seconds)
    else:  # each side against the peak of its own precision
        ours_only = {k: v for k, v in seconds.items() if k == "bertscope"}
        theirs_only = {k: v for k, v in seconds.items() if k != "bertscope"}
        summary["efficiency"] = efficiency(peak, args.dtype, model_flops, ours_only)
        if theirs_only:
            summary["trainer_efficiency"] = efficiency(peak, args.trainer_dtype, model_flops, theirs_only)
    summary["precision"] = {"bertscope": precision.precision_info(args.dtype, args.device),
                            "trainer": precision.precision_info(args.trainer_dtype, args.device)}
    if args.layer_check:
        depth = families.num_layers(loading.load_model(args.model, "base").model)
        middle = str(depth // 2)
        n = args.layer_train or args.train
        order = ["-1", middle, middle, "-1"] if args.abba else ["-1", middle]
        timed: dict[str, list[dict[str, Any]]] = {"-1": [], middle: []}
        for layer in order:
            print(f"layer check: layer {layer} ...", flush=True)
            timed[layer].append(run_bertscope(args, seeds[0], layer=layer, max_train=n))
        mid_s = statistics.fmean(r["train_seconds"] for r in timed[middle])
        last_s = statistics.fmean(r["train_seconds"] for r in timed["-1"])
        summary["layer_check"] = {"middle_layer": int(middle), "middle": timed[middle], "last": timed["-1"],
                                  "time_ratio_middle_over_last": mid_s / last_s}

    print("\n=== summary ===")
    print(f"threads: {summary['threads']}, task {args.task}, train {args.train}, epochs {args.epochs}, "
          f"dtype {args.dtype} (Trainer {args.trainer_dtype}), seeds {seeds}")
    for name in runs:
        if runs[name]:
            print(f"{name:16s} {mean(name, 'examples_per_second'):8.1f} ex/s   dev score "
                  f"{mean(name, 'score'):.4f}  ({[round(_score(r['dev']), 4) for r in runs[name]]})")
    for name in ("trainer-dynamic", "trainer-padded"):
        if f"speedup_vs_{name}" in summary:
            print(f"bertscope / {name}: {summary[f'speedup_vs_{name}']:.2f}x")
    print_efficiency(summary["efficiency"])
    if "trainer_efficiency" in summary:
        print_efficiency(summary["trainer_efficiency"])
    if args.layer_check:
        print(f"layer {summary['layer_check']['middle_layer']} vs last: train time ratio "
              f"{summary['layer_check']['time_ratio_middle_over_last']:.2f}")
    write_json_atomic(args.out, summary)
    print(f"written {args.out}")
    return summary


if __name__ == "__main__":
    main()
