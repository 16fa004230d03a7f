"""The result of one fine-tuning run: an immutable record of what it measured, with its options and environment.

Built by :meth:`bertscope.finetune.pipeline.PreparedRun.result`; ``finetune`` writes it as ``results.json`` and every study
keeps one per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bertscope.finetune.config import FinetuneConfig
from bertscope.models import caveats

__all__ = ["RESULTS_FORMAT", "FinetuneResult"]

RESULTS_FORMAT = "bertscope-finetune/1"


@dataclass(frozen=True)
class FinetuneResult:
    """Everything a fine-tuning run measured, with the options and environment it ran in."""

    config: FinetuneConfig
    task: str
    model_source: str
    head: dict[str, Any]
    selection: dict[str, Any]
    freezing: dict[str, Any]
    data: dict[str, Any]
    epochs: tuple[dict[str, Any], ...]
    final: dict[str, dict[str, float]]
    final_score: float
    timing: dict[str, Any]
    parameters: dict[str, int]
    environment: dict[str, Any]
    saved_model: str | None = None
    features: dict[str, Any] | None = None
    test_predictions: dict[str, str] = field(default_factory=dict)  # test split -> GLUE submission file
    predictions: dict[str, list[float]] = field(default_factory=dict, repr=False)
    # ---- resume: where a resumed run continued from (0 and 0: it ran from the start)
    resumed_from_epoch: int = 0  # epochs the checkpoint had finished
    resumed_from_step: int = 0  # optimizer steps it had taken (past resumed_from_epoch when written mid-epoch)
    learning: dict[str, Any] | None = None  # bertscope.finetune.learning.LearningCheck.to_dict(): did the head learn?

    @property
    def learned(self) -> bool:
        """False when the run was flagged as not having learned (:mod:`bertscope.finetune.learning`)."""
        return self.learning is None or bool(self.learning.get("learned", True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT,
            "command": "finetune",
            "complete": True,
            "config": self.config.to_dict(),
            "task": self.task,
            "model_source": self.model_source,
            "head": self.head,
            "selection": self.selection,
            "freezing": self.freezing,
            "data": self.data,
            "epochs": list(self.epochs),
            "final": self.final,
            "final_score": self.final_score,
            "timing": self.timing,
            "parameters": self.parameters,
            "saved_model": self.saved_model,
            "features": self.features,
            "test_predictions": self.test_predictions,
            "resumed_from_epoch": self.resumed_from_epoch,
            "resumed_from_step": self.resumed_from_step,
            "learning": self.learning,
            "caveats": self.caveats,
            "environment": self.environment,
        }

    @property
    def caveats(self) -> list[str]:
        """Model caveats (native pooling vs the token read, GLUE tasks in its training data): :mod:`bertscope.models.caveats`."""
        return caveats.notes(self.config.encoder.model, self.task, str(self.selection.get("token")), path=self.model_source)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"final.combined_score": self.final_score}
        for split, values in self.final.items():
            for name, value in values.items():
                out[f"final.{split}.{name}"] = value
        if len(self.final) == 1:
            out.update({f"final.{k}": v for k, v in next(iter(self.final.values())).items()})
        out["train.examples_per_second"] = self.timing["train_examples_per_second"]
        out["train.seconds"] = self.timing["train_seconds"]
        out["eval.seconds"] = self.timing["eval_seconds"]
        if self.learning is not None:
            out["learned"] = 1.0 if self.learned else 0.0
        return out

    def render(self) -> Any:
        from rich.table import Table

        splits = list(self.final)
        table = Table(title=f"finetune {self.task}: token {self.selection['token']}, layers "
                            f"{list(self.selection['layers'])}, {len(self.selection['dims'])} dims, "
                            f"freeze {self.freezing['policy']}")
        table.add_column("epoch", justify="right")
        table.add_column("train loss", justify="right")
        for split in splits:
            for name in self.final[split]:
                table.add_column(f"{split} {name}", justify="right")
        for record in self.epochs:
            row = [str(record["epoch"]), f"{record['train_loss']:.4f}"]
            for split in splits:
                row += [f"{v:.4f}" for v in record["eval"][split].values()]
            table.add_row(*row)
        table.caption = (f"final GLUE score {self.final_score:.4f}; "
                         f"{self.timing['train_examples_per_second']:.1f} train examples/s"
                         + "".join(f"\ncaveat: {line}" for line in self.caveats))
        if not self.learned and self.learning is not None:
            table.caption += (f"\n[bold red]WARNING: the head did not learn[/] ({self.learning.get('reason')}); "
                              f"this score says nothing about the features. Likely remedy: "
                              f"{self.learning.get('remedy')}")
        return table
