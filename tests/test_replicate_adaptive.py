"""`replicate --seeds auto`: claims read at fixed looks (alpha spent over them) agree with scipy's t interval at the
look's level, open claims ask for the next look's seeds, guards stop asking, and a tiny end-to-end run grows only
the experiments of open claims."""

from __future__ import annotations

import json

import pytest
from scipy import stats as scipy_stats

from bertscope import api
from bertscope.core import stats
from bertscope.core.sequential import LookPlan
from bertscope.replicate import claims as C
from bertscope.replicate.protocols import BUDGETS, DEEPENED_PREFIX, Stage, arm_options, protocol
from bertscope.replicate.runner import _next_round, look_plan
from bertscope.sweep.spec import parse_spec


def _ft(seed: int, score: float, *, deepened: bool, learned: bool = True) -> C.RunRow:
    model = f"{DEEPENED_PREFIX}m" if deepened else "m"
    return C.RunRow(f"ft-{model}-{seed}", "deepen-finetune", {"model": model, "task": "rte", "seed": seed},
                    {"final.combined_score": score, "learned": 1.0 if learned else 0.0})


def _pairs(diffs: list[float], *, learned: bool = True) -> list[C.RunRow]:
    rows = [_ft(s + 1, 0.7 + d, deepened=True) for s, d in enumerate(diffs)]
    return rows + [_ft(s + 1, 0.7, deepened=False, learned=learned) for s in range(len(diffs))]


def _scipy_interval(values: list[float], level: float) -> tuple[float, float]:
    mean, sem = sum(values) / len(values), scipy_stats.sem(values)
    if sem == 0:  # scipy gives nan for a zero scale; the interval of equal values is the point
        return mean, mean
    return scipy_stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)


def test_a_decided_claim_agrees_with_scipy_at_its_look_and_reads_no_later_seed():
    looks = LookPlan((3, 6))
    diffs = [0.05, 0.06, 0.055, -0.5, -0.5, -0.5]  # decided at the first look; later seeds must not count
    claim = next(c for c in C.claims_for("paper1", _pairs(diffs), looks) if c.id == "p1.deepen-finetune")
    assert claim.verdict == "supported" and claim.seeds_used == 3 and claim.needs_seeds == 0
    low, high = _scipy_interval(diffs[:3], looks.level(0))
    assert claim.difference.low == pytest.approx(low) and claim.difference.high == pytest.approx(high)
    assert claim.difference.level == pytest.approx(looks.level(0)) and looks.level(0) > 0.95  # stricter
    assert list(claim.per_seed) == pytest.approx(diffs)
    assert claim.details["sequential"]["looks"]["looks"] == [3, 6] and "first decisive look" in claim.rule


def test_a_decided_claim_rests_on_the_heads_of_the_seeds_it_read():
    """A row decided at the first look keeps its verdict when a later seed, run for another row of the same
    experiment, has a head that did not learn; a row still reading that seed is made inconclusive by it."""
    looks = LookPlan((3, 6))
    decided = [0.05, 0.06, 0.055, 0.05, 0.06, 0.055]
    rows = _pairs(decided[:3]) + [_ft(s, 0.75, deepened=True) for s in (4, 5, 6)]
    rows += [_ft(s, 0.7, deepened=False, learned=s != 5) for s in (4, 5, 6)]
    claim = next(c for c in C.claims_for("paper1", rows, looks) if c.id == "p1.deepen-finetune")
    assert claim.verdict == "supported" and claim.seeds_used == 3 and claim.heads == (6, 6)
    # read at one 95% interval, the same runs rest on every seed's heads, seed 5's among them
    plain = next(c for c in C.claims_for("paper1", rows) if c.id == "p1.deepen-finetune")
    assert plain.seeds_used == 6 and plain.heads == (11, 12) and plain.verdict == "inconclusive"
    # an open claim that reaches seed 5 at its next look counts its head
    noisy = [0.023, 0.035, 0.047, 0.0, 0.06, -0.03]
    rows = [_ft(s + 1, 0.7 + d, deepened=True) for s, d in enumerate(noisy)]
    rows += [_ft(s + 1, 0.7, deepened=False, learned=s + 1 != 5) for s in range(6)]
    late = next(c for c in C.claims_for("paper1", rows, looks) if c.id == "p1.deepen-finetune")
    assert late.seeds_used == 6 and late.heads == (11, 12) and late.verdict == "inconclusive"


def test_an_open_claim_asks_for_the_next_look_and_a_plain_interval_would_have_decided_it():
    looks = LookPlan((3, 6))
    diffs = [0.023, 0.035, 0.047]
    claim = next(c for c in C.claims_for("paper1", _pairs(diffs), looks) if c.id == "p1.deepen-finetune")
    plain = next(c for c in C.claims_for("paper1", _pairs(diffs)) if c.id == "p1.deepen-finetune")
    assert plain.verdict == "supported"  # the 95% interval excludes 0 ...
    assert claim.verdict == "inconclusive" and claim.needs_seeds == 6  # ... the look's stricter one does not
    assert "next look reads 6" in claim.note
    last = next(c for c in C.claims_for("paper1", _pairs([*diffs, 0.0, 0.06, -0.03]), looks)
                if c.id == "p1.deepen-finetune")
    assert last.needs_seeds == 0 and last.seeds_used == 6  # the last look: final either way
    if last.verdict == "inconclusive":
        assert "undecided at the last look" in last.note and "--max-seeds" in last.note


def test_a_head_that_did_not_learn_stops_the_claim_asking_for_seeds():
    claim = next(c for c in C.claims_for("paper1", _pairs([0.023, 0.035, 0.047], learned=False), LookPlan((3, 6)))
                 if c.id == "p1.deepen-finetune")
    assert claim.verdict == "inconclusive" and claim.needs_seeds == 0 and "did not learn" in claim.note


def test_a_claim_no_look_could_decide_stops_for_futility_where_the_plan_says_so():
    diffs = [0.007, -0.233, -0.014]  # bimodal, many tolerances wide: six seeds could not decide it
    rows = [_ft(s + 1, 0.7 + d, deepened=True) for s, d in enumerate(diffs)]
    rows += [_ft(s + 1, 0.7, deepened=False) for s in range(3)]
    stopped = next(c for c in C.claims_for("paper1", rows, LookPlan((3, 6), futility=True))
                   if c.id == "p1.deepen-finetune")
    assert stopped.verdict == "inconclusive" and stopped.needs_seeds == 0 and stopped.seeds_used == 3
    assert "stopped for futility after 3 seeds" in stopped.note and stopped.details["sequential"]["futile"]
    going = next(c for c in C.claims_for("paper1", rows, LookPlan((3, 6))) if c.id == "p1.deepen-finetune")
    assert going.needs_seeds == 6 and "futility" not in going.note
    # decide: paper 2 (two looks: no measurable power lost) stops for futility, paper 1 (a look at 3 of 16) does not
    assert BUDGETS["decide"].look_plan("paper2").futility and BUDGETS["decide"].look_plan("paper2", 12).futility
    assert not BUDGETS["decide"].look_plan("paper1").futility


def test_next_round_grows_only_the_experiments_of_open_claims():
    rows = [*_pairs([0.023, 0.035, 0.047]), C.RunRow("scan-1", "layer-scan", {"seed": 1})]
    claims = C.claims_for("paper1", rows, LookPlan((3, 6)))
    first = {name: (Stage(3),) for name in ("deepen-finetune", "layer-scan", "reconstruct")}
    grown = _next_round(claims, rows, first, {"deepen-finetune": "finetune"})
    assert grown == {**first, "deepen-finetune": (Stage(3), Stage(6))}  # a fine-tuning run has no arms: whole


def _open(cid: str, runs: list[str], arms: dict[str, tuple[str, ...]], needs: int = 8) -> C.Claim:
    return C.Claim("paper2", cid, "", "", "no_worse", "", stats.summarize([0.0, 0.01, -0.01]), "inconclusive",
                   runs=tuple(runs), needs_seeds=needs, arms=arms)


def test_next_round_trains_only_the_arms_of_open_claims():
    rows = [C.RunRow(f"{e}-{s}", e, {"seed": s}) for e in ("tokens", "layers", "frozen", "cross") for s in (1, 2, 3)]
    runs = {e: [f"{e}-{s}" for s in (1, 2, 3)] for e in ("tokens", "layers", "frozen", "cross")}
    commands = {"tokens": "tokens", "layers": "layers", "frozen": "finetune", "cross": "cross"}
    first = {name: (Stage(3),) for name in commands}
    claims = [_open("p2.tokens", runs["tokens"], {"tokens": ("cls", "index:1")}),
              _open("p2.tokens", runs["tokens"], {"tokens": ("cls", "max-norm")}, needs=0),  # decided: not trained
              _open("p2.tokens", runs["tokens"], {"tokens": ("cls", "mean")}),
              _open("p2.layers.higher", runs["layers"], {"layers": ("4", "5", "6")}),
              _open("p2.layers.lower", runs["layers"], {"layers": ("1", "2", "3", "6")}, needs=0),
              # freezing reads the frozen runs whole and the tokens study's [CLS] arm
              _open("p2.freezing", runs["frozen"] + runs["tokens"], {"tokens": ("cls",)})]
    grown = _next_round(claims, rows, first, commands)
    assert grown["tokens"] == (Stage(3), Stage(8, {"tokens": "cls,index:1,mean"}))  # [CLS] first: the reference
    assert grown["layers"] == (Stage(3), Stage(8, {"layers": "4,5,6"}))
    assert grown["frozen"] == (Stage(3), Stage(8)) and grown["cross"] == (Stage(3),)
    # an open claim that reads an experiment whole keeps its runs whole, and a later round adds a stage
    whole = _next_round([*claims, _open("p2.other", runs["tokens"], {}, needs=16)], rows, grown, commands)
    assert whole["tokens"] == (Stage(3), Stage(8, {"tokens": "cls,index:1,mean"}), Stage(16))


def test_stages_split_an_experiment_s_seeds_and_keep_the_first_stage_s_run_ids(tmp_path):
    stages = {"tokens": (Stage(3), Stage(8, {"tokens": "cls,mean"})), "dims": (Stage(3), Stage(5, {"k": "2,all"}))}
    plan = protocol("paper2", "decide", rounds=stages)
    tokens = [e for e in plan.experiments if e.name == "tokens"]
    assert [e.grid["seed"] for e in tokens] == [[1, 2, 3], [4, 5, 6, 7, 8]]
    whole = next(e for e in protocol("paper2", "decide", rounds={"tokens": 3}).experiments if e.name == "tokens")
    assert tokens[0] == whole  # the first stage's runs are the runs of an unstaged round: same options, same ids
    assert "tokens" not in tokens[0].base and tokens[1].base == {**whole.base, "tokens": "cls,mean"}
    assert [e.base.get("k") for e in plan.experiments if e.name == "dims"] == ["2,3,all", "2,all"]
    # a staged protocol is a valid sweep spec (blocks sharing the experiment name), each run once
    spec = parse_spec(plan.to_spec(), runs_dir=tmp_path, dry_run=True)
    tokens_runs = [r for r in spec.runs if r.experiment == "tokens"]
    assert len(tokens_runs) == 8 and len({r.id for r in spec.runs}) == len(spec.runs)
    assert arm_options("tokens", ["mean", "cls"]) == {"tokens": "cls,mean"}
    assert arm_options("layers", ["10", "4"]) == {"layers": "4,10"} and arm_options("dims", ["3"]) == {"k": "3,all"}
    assert arm_options("finetune", ["cls"]) == {} and arm_options("tokens", None) == {}


def test_budgets_and_options_choose_the_looks():
    assert look_plan(api.ReplicateConfig(paper="paper2", budget="small")) is None  # fixed seeds
    decide = look_plan(api.ReplicateConfig(paper="paper2", budget="decide"))
    assert decide is not None and decide.looks == BUDGETS["decide"].looks["paper2"]
    capped = look_plan(api.ReplicateConfig(paper="paper1", budget="decide", max_seeds=10))
    assert capped is not None and capped.looks == (3, 8, 10)
    assert look_plan(api.ReplicateConfig(paper="paper2", budget="decide", seeds="1-3")) is None
    plan = protocol("paper2", "small", seeds=(1, 2, 3, 4, 5), rounds={"dims": 2})
    seeds = {e.name: e.grid["seed"] for e in plan.experiments}
    assert seeds["dims"] == [1, 2] and seeds["tokens"] == [1, 2, 3, 4, 5]
    with pytest.raises(api.BertscopeError, match="--max-seeds"):
        api.ReplicateConfig(paper="paper2", budget="decide", seeds="1-3", max_seeds=5)


@pytest.mark.slow  # about two minutes on a quiet 2-core CPU: several rounds of the tiny protocol
def test_adaptive_end_to_end_on_a_tiny_model(tiny_checkpoint, glue_dir, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BERTSCOPE_GLUE_DIR", str(glue_dir))
    model = str(tiny_checkpoint("bert", num_layers=2))
    result = api.replicate(paper="paper1", budget="test", model=model, tasks="rte", seeds="auto", max_seeds=4,
                           out=str(tmp_path / "out"), progress=False)
    payload = json.loads((tmp_path / "out" / "claims.json").read_text())
    rounds = payload["seeds"]["per_experiment"]
    assert payload["seeds"]["auto"]["looks"] == [2, 4]
    exp_of = {r["id"]: r["experiment"] for r in payload["runs"]}
    for claim in payload["claims"]:
        experiments = {exp_of[r] for r in claim["runs"] if r in exp_of}
        assert claim["needs_seeds"] == 0  # every claim final when the rounds end
        if "sequential" not in claim["details"]:
            continue
        # every experiment ran as many seeds as the most its claims read (2 unless some claim was open at 2)
        assert all(rounds[e] >= claim["seeds_used"] for e in experiments)
        if claim["details"]["sequential"]["decided"] and claim["id"] != "p1.across-families":  # its own rule
            used = claim["per_seed"][:claim["seeds_used"]]
            level = claim["difference"]["level"]
            low, high = _scipy_interval(used, level)
            assert claim["difference"]["low"] == pytest.approx(low) and claim["difference"]["high"] == pytest.approx(high)
            expected = stats.verdict(stats.Interval(**claim["difference"]), claim["kind"], claim["tolerance"] or 0.0)
            if claim["heads"] and claim["heads"]["learned"] < claim["heads"]["total"]:
                expected = "inconclusive"  # the learned-head guard
            elif "at chance level" in claim["note"] and expected == "supported":
                expected = "inconclusive"  # the chance guard
            assert claim["verdict"] == expected
    assert set(rounds.values()) <= {2, 4}
    stages = payload["seeds"]["stages"]  # paper 1's runs have no arms: every round runs them whole
    assert {e: st[-1]["seeds"] for e, st in stages.items()} == rounds
    assert all(stage["options"] == {} for st in stages.values() for stage in st)
    done = {e: {r["axes"]["seed"] for r in payload["runs"] if r["experiment"] == e and r["axes"]} for e in rounds}
    assert {e: len(s) for e, s in done.items()} == rounds  # exactly the seeds each round asked for
    assert "adaptive" in (tmp_path / "out" / "claims.md").read_text()
    assert result.sweep.executed["failed"] == 0
