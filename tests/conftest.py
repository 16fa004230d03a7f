"""Shared fixtures: tiny random-weight models of every supported family, and the local GLUE copy.

Tiny models use the embedded default's BERT WordPiece vocabulary (30522 tokens) so real text can be tokenised, and
pad token id 0 so every family agrees with that tokenizer about padding.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

REPO = Path(__file__).resolve().parents[1]

VOCAB = 30522
HIDDEN = 32

# One tiny config per family (model types sharing code are listed too: XLM-R and CamemBERT use RoBERTa's).
TINY_CONFIGS: dict[str, dict] = {
    "bert": {},
    "roberta": {"max_position_embeddings": 140},
    "xlm-roberta": {"max_position_embeddings": 140},
    "camembert": {"max_position_embeddings": 140},
    "albert": {"embedding_size": 16},
    "distilbert": {},
    "electra": {"embedding_size": 16},
    "deberta-v2": {"relative_attention": True, "position_biased_input": False, "pos_att_type": ["p2c", "c2p"]},
    "deberta-v2-legacy": {"legacy": True},
    "modernbert": {"global_attn_every_n_layers": 2, "local_attention": 8, "bos_token_id": 101, "eos_token_id": 102,
                   "cls_token_id": 101, "sep_token_id": 102},
}
FAMILY_IDS = list(TINY_CONFIGS)


def tiny_config(name: str, num_layers: int = 3) -> transformers.PretrainedConfig:
    model_type = name.removesuffix("-legacy")
    extra = dict(TINY_CONFIGS[name])
    if model_type == "deberta-v2" and "legacy" not in extra:
        extra["legacy"] = False
    if model_type == "distilbert":
        base = {"vocab_size": VOCAB, "dim": HIDDEN, "n_layers": num_layers, "n_heads": 2, "hidden_dim": 48,
                "pad_token_id": 0}
    else:
        base = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": num_layers,
                "num_attention_heads": 2, "intermediate_size": 48, "pad_token_id": 0}
    base.update(extra)
    return transformers.AutoConfig.for_model(model_type, **base)


def tiny_model(name: str, kind: str = "masked-lm", num_layers: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    auto = {"masked-lm": transformers.AutoModelForMaskedLM, "base": transformers.AutoModel,
            "sequence-classification": transformers.AutoModelForSequenceClassification}[kind]
    model = auto.from_config(tiny_config(name, num_layers))
    # Random init leaves LayerNorms at identity and biases at zero; perturb them so tests can tell parts apart.
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "norm" in param_name.lower() or param_name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance of two CPUs for the tests of a module (the sweeps' ``--executor ray`` without
    ``--address`` use it), shut down after them."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def default_model_dir() -> str:
    from bertscope.models.loading import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def bert_tokenizer(default_model_dir: str):
    return transformers.AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, bert_tokenizer):
    """Factory: save a tiny masked-LM of a family (with the BERT tokenizer) and return its folder."""
    made: dict[tuple[str, int], Path] = {}

    def make(name: str, num_layers: int = 3) -> Path:
        key = (name, num_layers)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"tiny-{name}-{num_layers}")
            tiny_model(name, num_layers=num_layers).save_pretrained(folder)
            bert_tokenizer.save_pretrained(folder)
            made[key] = folder
        return made[key]

    return make


#: Small synthetic GLUE files in the original tsv layout (tests/data/make_glue.py writes them; no row comes from
#: GLUE), so tests of loading, training and the studies run on a fresh clone with no data folder beside it.
SYNTHETIC_GLUE = Path(__file__).resolve().parent / "data" / "glue"


def real_glue_path() -> Path | None:
    """The real local GLUE copy: $BERTSCOPE_GLUE_DIR, else ``shared/data/glue`` beside the repository, where
    ``shared`` is $BERTSCOPE_TEST_SHARED when set (set it to a missing folder to run the suite as a fresh clone
    would), else ../shared."""
    shared = os.environ.get("BERTSCOPE_TEST_SHARED") or REPO.parent / "shared"
    for candidate in (os.environ.get("BERTSCOPE_GLUE_DIR"), Path(shared) / "data" / "glue"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """GLUE files in the original tsv layout: the synthetic ones under tests/data/glue, the same on every machine
    (tests that measure against real GLUE rows take :func:`real_glue_dir`)."""
    return SYNTHETIC_GLUE


@pytest.fixture(scope="session")
def real_glue_dir() -> Path:
    """The real local GLUE copy (see :func:`real_glue_path`); tests that measure real rows skip without it."""
    found = real_glue_path()
    if found is None:
        pytest.skip("real GLUE rows needed: no local copy (../shared/data/glue or BERTSCOPE_GLUE_DIR)")
    return found


def user_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI on ``argv`` and return its error: exit 2, one line on stderr, no traceback (the house rule for
    every failure a user can cause)."""
    from bertscope.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err



def ragged_batch(lengths: list[int], width: int, seed: int = 0, vocab: int = 90) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids ``[len(lengths), width]`` (5 <= id < ``vocab``) and the mask of rows of those lengths; padding
    is id 0. The padded batch the packing and attention tests compare fast paths on."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (len(lengths), width), generator=g)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


#: Sweep ids computed by bertscope before trackers and --attention existed, one per run of :func:`pinned_spec_ids`.
#: Options that only say where or how a run goes must never move them.
PINNED_SPEC_IDS = ["finetune-46acb4364b73", "finetune-ffb03f398fef", "dims-eac7f130321e", "cross-2829ec6daeaf"]

#: The run id of a study run with ``FinetuneConfig(task="rte", max_train=64)`` (the id a sweep's finetune run with
#: those options has) and of stage 1 of ``CrossConfig(tasks="rte,mrpc", epochs=1)``.
PINNED_STUDY_RUN_ID = "finetune-ad4242a0b81f"
PINNED_STAGE_ID = "cross-ff2438b83464"


def study_records(out: Path) -> list[dict]:
    """Every finished run record of the study in ``out``, read back from its store ``OUT/runs.db``."""
    from bertscope.runs.store import ResultStore, study_store

    with ResultStore(study_store(out), create=False) as store:
        return [store.payload(r.id) for r in store.records(status="done")]


def pinned_spec_ids(tmp_path: Path, extra: dict) -> list[str]:
    """The ids of the runs of a fixed three-experiment spec with ``extra`` options added to every base."""
    from bertscope.sweep.spec import parse_spec

    spec = {"name": "ids", "experiments": [
        {"command": "finetune", "base": {"task": "rte", "max_train": 64, "epochs": 1, **extra},
         "grid": {"dims": ["all", "random:2"]}},
        # feature_norm none and fit sgd: the plain head and training loop these ids were computed for (auto
        # standardises a frozen encoder and solves it as a converged probe: new runs, new ids)
        {"command": "dims", "base": {"task": "rte", "freeze": "encoder", "k": "1,all", "feature_norm": "none",
                                     "fit": "sgd", **extra}},
        {"command": "cross", "base": {"tasks": "rte,mrpc", "epochs": 1, **extra}}]}
    return [r.id for r in parse_spec(spec, runs_dir=tmp_path).runs]


def loop_options(**options: Any) -> dict[str, Any]:
    """:func:`bertscope.finetune.train.train_loop`'s keyword arguments from one flat mapping of option names: the
    optimisation options as an ``OptimOptions``, the logging ones as a ``TrackingOptions``, the rest (batch_size,
    seed, dtype, progress, checkpoint_every) as they are."""
    from bertscope.finetune.optim import OptimOptions
    from bertscope.finetune.tracking import TrackingOptions

    optim = {k: options.pop(k) for k in OptimOptions.field_names() if k in options}
    tracking = {k: options.pop(k) for k in TrackingOptions.field_names() if k in options}
    return {"optim": OptimOptions(**optim), "tracking": TrackingOptions(**tracking), **options}


# ---- the suite leaves the working tree as it found it ----------------------------------------------------------
# A test that writes into the current directory (the repository) leaves a stray file that gets committed by
# accident. The controller (or the only process without pytest-xdist) compares `git status --porcelain` before and
# after the whole session and fails the run on anything new. xdist workers have `workerinput` and check nothing.


def _porcelain() -> set[str] | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True,
                              timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an sdist) or no git: nothing to compare
    return set(done.stdout.splitlines())


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_TREE_BEFORE] = _porcelain()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_TREE_BEFORE, None)
    if hasattr(session.config, "workerinput") or before is None:
        return
    after = _porcelain()
    new = sorted((after or set()) - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_sep("=", "the test suite changed the working tree: new in git status --porcelain", red=True)
            for line in new:
                reporter.write_line(f"    {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_TREE_BEFORE = pytest.StashKey[set[str] | None]()
