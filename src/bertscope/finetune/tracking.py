"""Experiment trackers (``--report-to``): the curves of every fine-tuning run, in the tracker a lab already uses.

One tracker run per bertscope fine-tuning run, written with the tracker's own client library (an optional extra)::

    tracker = make_tracker("tensorboard,mlflow", root=OUT)    # none -> NullTracker; a comma list -> all of them
    tracker.start(hyperparameters, name)                      # the run's configuration as hyper-parameters
    tracker.log_step(step, loss, learning_rate)               # every --log-every steps: mean loss since the last
    tracker.log_epoch(epoch, epoch_metrics(...), step=step)   # eval/<split>/<metric>, train/epoch_loss
    tracker.finish("finished" | "failed" | "killed")

Where each writes (``root`` is ``--out``; a study's runs write under the study's ``--out``):

* TensorBoard: event files in ``ROOT/tensorboard/<run name>/`` (``tensorboard --logdir ROOT/tensorboard``);
* MLflow: ``MLFLOW_TRACKING_URI`` when set, else a local SQLite store ``ROOT/mlflow.db`` (MLflow 3 refuses its
  plain-folder store unless told to; ``mlflow ui --backend-store-uri sqlite:///ROOT/mlflow.db``), experiment
  ``MLFLOW_EXPERIMENT_NAME`` or ``bertscope``;
* W&B: ``WANDB_MODE`` when set, else offline (no account needed; ``wandb sync ROOT/wandb/offline-run-*`` uploads
  later), files in ``ROOT/wandb/`` (``WANDB_DIR`` without ``--out``), project ``WANDB_PROJECT`` or ``bertscope``.

Every metric uses the optimizer step as x-axis, in every tracker: epoch metrics sit at the step their epoch ended,
beside an ``epoch`` value at that step (so a tracker's "epoch" axis is one click away, and the eval points never
fall on another axis than the training loss, nor on another axis in one tracker than in the next). This module imports no tracker library until
a tracker is made, and nothing of bertscope but ``errors``, ``options`` and ``_version``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bertscope._version import __version__
from bertscope.core.config import Options, opt
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_name_list
from bertscope.core.progress import LOG_CHOICES

__all__ = [
    "STATUSES",
    "TRACKERS",
    "TRACKING_OPTIONS",
    "MlflowTracker",
    "MultiTracker",
    "NullTracker",
    "TensorBoardTracker",
    "Tracker",
    "TrackingOptions",
    "WandbTracker",
    "default_run_name",
    "epoch_metrics",
    "flat_params",
    "make_tracker",
    "needs_folder",
    "parse_report_to",
    "require_installed",
]

#: The trackers ``--report-to`` names, each with the module its extra installs.
TRACKERS: dict[str, str] = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}

#: How a tracker run ends (MLflow's own names, lower case).
STATUSES = ("finished", "failed", "killed")

#: The options that only say where a run's curves are reported: never part of a run's identity.
TRACKING_OPTIONS: frozenset[str] = frozenset({"report_to", "run_name", "log_every", "report_dir"})


class Tracker(Protocol):
    """One tracker run: started once, then steps and epochs, finished once (also when training fails)."""

    def start(self, config: Mapping[str, Any], name: str) -> None: ...

    def log_step(self, step: int, loss: float, lr: float) -> None: ...

    def log_epoch(self, epoch: int, metrics: Mapping[str, float], *, step: int) -> None: ...

    def finish(self, status: str) -> None: ...


# ------------------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class TrackingOptions(Options):
    """What a run prints while it trains, when it checks its loss, what it does when the loss diverges, and which
    experiment trackers it reports to. The training loop reads ``log*`` and ``on_divergence``
    (:mod:`bertscope.finetune.progress`); the pipeline opens the trackers."""

    report_to: str = opt("none", "experiment trackers for the training curves, dev metrics and options: none, "
                                 "tensorboard, mlflow, wandb, a comma list or all (files under --out; see "
                                 "docs/finetune.md, Trackers)", metavar="TRACKERS")
    run_name: str | None = opt(None, "the run's name in the trackers (default: <command>-<task>-<out folder "
                                     "name>; a sweep names each run by its run id)", metavar="NAME")
    log_every: int = opt(10, "report the training loss to the trackers (the mean over those steps) and check that "
                             "it is finite every this many optimizer steps", metavar="STEPS")
    report_dir: str | None = opt(None, "folder the trackers write under (default: --out; a study's runs: the "
                                       "study's --out)", cli=False)
    log: str = opt("auto", "what training prints: auto (progress bars on a terminal, plain timestamped lines when "
                           "stdout is not one, e.g. a batch job), bar, plain, or off (nothing); --no-progress drops "
                           "the bars and step lines but keeps one line per epoch", choices=LOG_CHOICES)
    log_seconds: float = opt(30.0, "with plain logs: at most one step line (step, loss, examples/s, ETA) per this many "
                                   "seconds, read every --log-every steps", metavar="SECONDS")
    on_divergence: str = opt("stop", "a NaN or infinite training loss: stop (one-line error naming epoch and step, "
                                     "no results.json) or continue", choices=("stop", "continue"))

    def validate(self) -> None:
        """Known trackers whose packages are installed (where they write is the config's check: it knows --out)."""
        require_installed(parse_report_to(self.report_to))
        if self.log_every < 1:
            raise BertscopeError(f"--log-every must be at least 1, got {self.log_every}")
        if not self.log_seconds >= 0:
            raise BertscopeError(f"--log-seconds must not be negative, got {self.log_seconds}")


# ------------------------------------------------------------------------------------------------ pure helpers


def parse_report_to(spec: str | None) -> tuple[str, ...]:
    """The trackers of ``--report-to``: ``none``, one name, a comma list, or ``all``; () for none."""
    names = tuple(n.lower() for n in parse_name_list(spec or "none", option="--report-to"))
    if names == ("none",):
        return ()
    if names == ("all",):
        return tuple(TRACKERS)
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise BertscopeError(f"--report-to: unknown tracker {unknown[0]!r}; use none, all, or a comma list of "
                             f"{', '.join(TRACKERS)}")
    return tuple(dict.fromkeys(names))


def require_installed(names: Sequence[str]) -> None:
    """Fail in one line, naming the extra to install, when a tracker's client library is missing (cheap: no
    import, so a run fails before it loads anything)."""
    for name in names:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise _missing(name)


def needs_folder(names: Sequence[str]) -> list[str]:
    """The trackers among ``names`` that need a local folder here (``--out``): TensorBoard always, MLflow without
    ``MLFLOW_TRACKING_URI``, W&B without ``WANDB_DIR``."""
    env = {"mlflow": "MLFLOW_TRACKING_URI", "wandb": "WANDB_DIR"}
    return [n for n in names if n not in env or not os.environ.get(env[n])]


def default_run_name(config: Any) -> str:
    """``<command>-<task(s)>-<out folder name>``: what a run is called in the tracker without ``--run-name``."""
    values = config.to_dict()
    task = values.get("task") or (values.get("tasks") or "").replace(",", "+")
    out = values.get("out")
    parts = [getattr(config, "command", "") or "run", str(task or ""), Path(out).name if out else ""]
    return "-".join(p for p in parts if p)


def epoch_metrics(evals: Mapping[str, Mapping[str, float]], train_loss: float) -> dict[str, float]:
    """One epoch's values by tracker key: ``eval/<split>/<metric>`` per dev split and metric, ``train/epoch_loss``."""
    out = {f"eval/{split}/{name}": float(value) for split, scores in evals.items() for name, value in scores.items()}
    out["train/epoch_loss"] = float(train_loss)
    return out


def flat_params(values: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """Hyper-parameters as trackers take them: scalars kept, None as ``"None"``, lists comma-joined, the rest JSON."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        if value is None:
            out[key] = "None"
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(map(str, value))
        else:
            out[key] = json.dumps(value, sort_keys=True, default=str)
    return out


def _missing(name: str) -> BertscopeError:
    return BertscopeError(f"--report-to {name} needs the {TRACKERS[name]} package: "
                          f'pip install "bertscope[{name}]"')


def _slug_path(name: str) -> Path:
    """A run name as a relative folder: each ``/`` part made safe, ``.``/``..`` dropped."""
    parts = [re.sub(r"[^A-Za-z0-9=.,+_-]+", "_", p).strip("_") for p in name.split("/")]
    kept = [p for p in parts if p and p not in (".", "..")]
    return Path(*kept) if kept else Path("run")


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Raise library loggers to WARNING for a moment (MLflow's and Alembic's INFO lines on creating a store)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ------------------------------------------------------------------------------------------------ trackers


class NullTracker:
    """``--report-to none``: reports nothing, writes nothing."""

    def start(self, config: Mapping[str, Any], name: str) -> None:
        pass

    def log_step(self, step: int, loss: float, lr: float) -> None:
        pass

    def log_epoch(self, epoch: int, metrics: Mapping[str, float], *, step: int) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


class TensorBoardTracker:
    """Event files through ``torch.utils.tensorboard.SummaryWriter`` (needs the ``tensorboard`` package)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        self._writer_class = SummaryWriter
        self.root = Path(root) / "tensorboard"
        self.writer: Any = None
        self.log_dir: Path | None = None
        self._params: dict[str, bool | int | float | str] = {}
        self._last: dict[str, float] = {}

    def start(self, config: Mapping[str, Any], name: str) -> None:
        self.log_dir = self.root / _slug_path(name)
        # purge_step=0: a run started again in the same folder (--overwrite, a resumed study) replaces the old curves
        self.writer = self._writer_class(log_dir=str(self.log_dir), purge_step=0)
        self._params = flat_params(config)
        self.writer.add_text("config", "```json\n" + json.dumps(dict(config), indent=1, default=str) + "\n```", 0)

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/learning_rate", lr, step)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float], *, step: int) -> None:
        for key, value in {"epoch": float(epoch), **metrics}.items():
            self.writer.add_scalar(key, value, step)
        self._last = dict(metrics)

    def finish(self, status: str) -> None:
        if self.writer is None:
            return
        self.writer.add_text("status", status, 0)
        # the HParams dashboard: the configuration beside the final dev metrics (hparam/ keys: no clash with curves)
        self.writer.add_hparams(self._params, {f"hparam/{k}": v for k, v in self._last.items()}, run_name=".")
        self.writer.close()
        self.writer = None


class MlflowTracker:
    """An MLflow run through ``mlflow.tracking.MlflowClient``; step metrics are sent in batches (one write per
    epoch, not per step)."""

    _PARAMS_PER_CALL = 100  # MLflow's log_batch limits

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow") from None
        self._metric, self._param, self._client_class = Metric, Param, MlflowClient
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        self.own_store = not uri
        if not uri:
            if root is None:
                raise BertscopeError("--report-to mlflow needs --out (or MLFLOW_TRACKING_URI)")
            Path(root).mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"
        self.tracking_uri = uri
        self.artifacts = None if root is None or not self.own_store else (Path(root) / "mlartifacts").resolve()
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "bertscope"
        self.client: Any = None
        self.run_id: str | None = None
        self._pending: list[Any] = []

    def start(self, config: Mapping[str, Any], name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            with _quiet_loggers("mlflow", "alembic"):
                self.client = self._client_class(tracking_uri=self.tracking_uri)
                experiment = self.client.get_experiment_by_name(self.experiment)
                if experiment is None:
                    try:
                        experiment_id = self.client.create_experiment(
                            self.experiment, artifact_location=None if self.artifacts is None else
                            self.artifacts.as_uri())
                    except MlflowException:  # created meanwhile by another process
                        experiment_id = self.client.get_experiment_by_name(self.experiment).experiment_id
                else:
                    experiment_id = experiment.experiment_id
                run = self.client.create_run(experiment_id, run_name=name,
                                             tags={"bertscope.version": __version__})
        except MlflowException as exc:
            raise BertscopeError(f"--report-to mlflow: {str(exc).splitlines()[0]} ({self.tracking_uri})") from None
        self.run_id = run.info.run_id
        params = [self._param(k, str(v)[:6000]) for k, v in flat_params(config).items()]
        for i in range(0, len(params), self._PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i:i + self._PARAMS_PER_CALL])

    def _add(self, key: str, value: float, step: int) -> None:
        self._pending.append(self._metric(key, float(value), int(time.time() * 1000), int(step)))

    def _flush(self) -> None:
        for i in range(0, len(self._pending), 1000):
            self.client.log_batch(self.run_id, metrics=self._pending[i:i + 1000])
        self._pending = []

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self._add("train/loss", loss, step)
        self._add("train/learning_rate", lr, step)
        if len(self._pending) >= 200:
            self._flush()

    def log_epoch(self, epoch: int, metrics: Mapping[str, float], *, step: int) -> None:
        for key, value in {"epoch": float(epoch), **metrics}.items():
            self._add(key, value, step)
        self._flush()

    def finish(self, status: str) -> None:
        if self.run_id is None:
            return
        self._flush()
        self.client.set_terminated(self.run_id, status.upper())
        self.run_id = None


class WandbTracker:
    """A W&B run through ``wandb.init`` (offline unless ``WANDB_MODE`` says otherwise: no account needed)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        try:
            import wandb
        except ImportError:
            raise _missing("wandb") from None
        self.wandb = wandb
        folder = root if root is not None else os.environ.get("WANDB_DIR")
        if folder is None:
            raise BertscopeError("--report-to wandb needs --out (or WANDB_DIR)")
        self.dir = Path(folder)
        self.mode: Any = os.environ.get("WANDB_MODE") or "offline"  # wandb checks the value itself
        self.project = os.environ.get("WANDB_PROJECT") or "bertscope"
        self.run: Any = None

    def start(self, config: Mapping[str, Any], name: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = self.wandb.init(project=self.project, name=name, dir=str(self.dir), mode=self.mode,
                                       config=dict(config), reinit="create_new",
                                       settings=self.wandb.Settings(silent=True, console="off"))
        except Exception as exc:  # wandb raises its own errors (no API key online, bad mode, ...)
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BertscopeError(f"--report-to wandb: {message}") from None

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.run.log({"train/loss": loss, "train/learning_rate": lr}, step=step)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float], *, step: int) -> None:
        self.run.log({"epoch": epoch, **metrics}, step=step)

    def finish(self, status: str) -> None:
        if self.run is None:
            return
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status == "finished" else 1)
        self.run = None


class MultiTracker:
    """Several trackers at once (``--report-to tensorboard,mlflow``); each is finished even if another fails."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def start(self, config: Mapping[str, Any], name: str) -> None:
        for i, tracker in enumerate(self.trackers):
            try:
                tracker.start(config, name)
            except BaseException:  # close the runs already started, then report the failure
                for started in self.trackers[:i]:
                    with contextlib.suppress(Exception):
                        started.finish("failed")
                raise

    def log_step(self, step: int, loss: float, lr: float) -> None:
        for tracker in self.trackers:
            tracker.log_step(step, loss, lr)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float], *, step: int) -> None:
        for tracker in self.trackers:
            tracker.log_epoch(epoch, metrics, step=step)

    def finish(self, status: str) -> None:
        errors: list[BaseException] = []
        for tracker in self.trackers:
            try:
                tracker.finish(status)
            except Exception as exc:  # finish the others first, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]


def make_tracker(report_to: str | None, *, root: str | os.PathLike[str] | None) -> Tracker:
    """The tracker(s) of ``--report-to`` writing under ``root`` (``--out``); a :class:`NullTracker` for none."""
    names = parse_report_to(report_to)
    require_installed(names)
    trackers: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            if root is None:
                raise BertscopeError("--report-to tensorboard needs --out: its event files go under the output folder")
            trackers.append(TensorBoardTracker(root))
        else:
            trackers.append(MlflowTracker(root) if name == "mlflow" else WandbTracker(root))
    if not trackers:
        return NullTracker()
    return trackers[0] if len(trackers) == 1 else MultiTracker(trackers)
