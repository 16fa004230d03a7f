"""`bertscope replicate`: claim rows from hand-made runs follow the verdict rule, every budget's protocol is a valid
spec, and a tiny end-to-end run writes claims.md/json/html and resumes without running anything again."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bertscope import api
from bertscope.core import stats
from bertscope.core.errors import BertscopeError
from bertscope.data.glue import GLUE_SIZES
from bertscope.replicate import claims as C
from bertscope.replicate.protocols import BUDGETS, DEEPENED_PREFIX, PAPERS, TOLERANCES, protocol
from bertscope.replicate.runner import protocol_of
from bertscope.sweep.spec import parse_spec


def _ft(experiment: str, seed: int, score: float, *, model: str = "m", task: str = "rte") -> C.RunRow:
    return C.RunRow(f"{experiment}-{model}-{task}-{seed}", experiment, {"model": model, "task": task, "seed": seed},
                    {"final.combined_score": score})


def _study(experiment: str, seed: int, points: list[tuple[dict, float]], task: str = "rte",
           payload: dict | None = None) -> C.RunRow:
    return C.RunRow(f"{experiment}-{task}-{seed}", experiment, {"task": task, "seed": seed}, {}, payload,
                    tuple(points))


def _recon(seed: int, top1: list[float], *, model: str = "m", family: str = "bert") -> C.RunRow:
    payload = {"model": {"family": family, "vocab_size": 100},
               "records": [{"layer": i, "group": "all", "top1": v} for i, v in enumerate(top1)]}
    return C.RunRow(f"rec-{model}-{seed}", "reconstruct", {"model": model, "seed": seed}, {}, payload)


def _one(claims: list[C.Claim], cid: str, scope: str | None = None) -> C.Claim:
    found = [c for c in claims if c.id == cid and (scope is None or c.scope == scope)]
    assert len(found) == 1, [(c.id, c.scope) for c in claims]
    return found[0]


def test_deepen_finetune_is_a_paired_difference_with_the_better_rule():
    deep, orig = [0.70, 0.72, 0.71], [0.65, 0.66, 0.64]
    rows = [_ft("deepen-finetune", s + 1, v, model=f"{DEEPENED_PREFIX}m") for s, v in enumerate(deep)]
    rows += [_ft("deepen-finetune", s + 1, v) for s, v in enumerate(orig)]
    claim = _one(C.paper1_claims(rows), "p1.deepen-finetune")
    expected = stats.paired_difference(deep, orig)
    assert claim.difference == expected
    assert claim.difference == stats.summarize([a - b for a, b in zip(deep, orig, strict=True)])
    assert claim.verdict == stats.verdict(expected, "better") == "supported"
    assert claim.sides["claimed"] == stats.summarize(deep)
    # the other way round is not supported
    flipped = [_ft("deepen-finetune", s + 1, v, model=f"{DEEPENED_PREFIX}m") for s, v in enumerate(orig)]
    flipped += [_ft("deepen-finetune", s + 1, v) for s, v in enumerate(deep)]
    assert _one(C.paper1_claims(flipped), "p1.deepen-finetune").verdict == "not supported"


def test_pairs_only_seeds_both_sides_have():
    rows = [_ft("deepen-finetune", 1, 0.7, model=f"{DEEPENED_PREFIX}m"), _ft("deepen-finetune", 2, 0.9,
                                                                             model=f"{DEEPENED_PREFIX}m"),
            _ft("deepen-finetune", 1, 0.6)]
    claim = _one(C.paper1_claims(rows), "p1.deepen-finetune")
    assert claim.difference.n == 1 and claim.verdict == "inconclusive" and "one seed" in claim.note


def test_every_layer_and_families():
    good = [_recon(s, [0.3 + 0.01 * s, 0.5, 0.6]) for s in (1, 2, 3)]
    claims = C.paper1_claims(good)
    every = _one(claims, "p1.every-layer")
    mins = [min(0.3 + 0.01 * s, 0.5, 0.6) for s in (1, 2, 3)]
    assert every.difference == stats.summarize([m - TOLERANCES["p1.reconstruct.threshold"] for m in mins])
    assert every.verdict == "supported"
    families = _one(claims, "p1.across-families")
    assert families.verdict == "inconclusive" and families.note == "inconclusive: one family measured"
    two = good + [_recon(s, [0.2 + 0.01 * s, 0.4], model="r", family="roberta") for s in (1, 2, 3)]
    assert _one(C.paper1_claims(two), "p1.across-families").verdict == "supported"
    weak = good + [_recon(s, [0.01 + 0.001 * s, 0.4], model="r", family="roberta") for s in (1, 2, 3)]
    assert _one(C.paper1_claims(weak), "p1.across-families").verdict == "not supported"


def test_layer_scan_share_and_one_seed_bootstrap():
    def scan(seed: int, agreements: list[float]) -> C.RunRow:
        return C.RunRow(f"scan-{seed}", "layer-scan", {"op": "duplicate", "seed": seed}, {},
                        {"rows": [{"status": "ok", "top1_agreement": a} for a in agreements]})

    rows = [scan(1, [0.95, 0.97, 0.5, 0.99]), scan(2, [0.95, 0.92, 0.91, 0.2])]
    claim = _one(C.paper1_claims(rows), "p1.layer-scan")
    assert claim.difference == stats.summarize([0.75 - 0.5, 0.75 - 0.5])
    one = _one(C.paper1_claims([scan(1, [0.95, 0.97, 0.96, 0.99, 0.1])]), "p1.layer-scan")
    assert one.difference.method == "bootstrap" and one.difference.mean == pytest.approx(0.8 - 0.5)


def test_paper2_claims_follow_the_rule():
    seeds = (1, 2, 3)
    cls, mean = [0.80, 0.82, 0.81], [0.805, 0.815, 0.812]
    rows = [_study("tokens", s, [({"token": "cls"}, c), ({"token": "mean"}, m)])
            for s, c, m in zip(seeds, cls, mean, strict=True)]
    dims = {1: (0.79, 0.80, 0.81), 2: (0.80, 0.81, 0.80), 3: (0.81, 0.80, 0.82)}
    rows += [_study("dims", s, [({"dims": "all", "sample": 0}, 0.81), ({"dims": "random:2", "sample": 0}, d[0]),
                                ({"dims": "random:2", "sample": 1}, d[1]), ({"dims": "random:3", "sample": 0}, d[2])])
             for s, d in dims.items()]
    layer_scores = {s: [0.5, 0.55 + 0.01 * s, 0.6, 0.79, 0.80] for s in seeds}
    rows += [_study("layers", s, [({"layer": i}, v) for i, v in enumerate(sc)]) for s, sc in layer_scores.items()]
    # a "fine-tuned" experiment (a separate finetune of the same options) is not read: the tokens [CLS] run is it
    rows += [_ft("frozen", s, 0.6 + 0.01 * s) for s in seeds] + [_ft("fine-tuned", s, 0.1) for s in seeds]
    cross_payload = {"summary": {"tasks": ["rte", "mrpc"]}}
    rows += [_study("cross", s, [({"source": "after rte", "target": "rte"}, 0.70),
                                 ({"source": "after mrpc", "target": "rte"}, 0.70 - 0.001 * s),
                                 ({"source": "after mrpc", "target": "mrpc"}, 0.8)], payload=cross_payload)
             for s in seeds]
    claims = C.paper2_claims(rows)

    token = _one(claims, "p2.tokens")
    expected = stats.paired_difference(mean, cls)
    assert token.difference == expected and token.tolerance == TOLERANCES["p2.tokens"]
    assert token.verdict == stats.verdict(expected, "no_worse", TOLERANCES["p2.tokens"])

    k2 = _one(claims, "p2.dims", "k=2 vs all, rte")
    assert k2.difference == stats.summarize([(d[0] + d[1]) / 2 - 0.81 for d in dims.values()])
    assert k2.verdict == stats.verdict(k2.difference, "no_worse", TOLERANCES["p2.dims"])

    lower = _one(claims, "p2.layers.lower")  # depth 4: lower = 1-2, higher = 3
    assert lower.difference == stats.summarize([((sc[1] - sc[4]) + (sc[2] - sc[4])) / 2
                                                for sc in layer_scores.values()])
    assert lower.verdict == "supported"
    higher = _one(claims, "p2.layers.higher")
    assert higher.difference == stats.summarize([sc[3] - sc[4] for sc in layer_scores.values()])
    assert higher.verdict == stats.verdict(higher.difference, "no_worse", TOLERANCES["p2.layers.higher"])

    frozen = _one(claims, "p2.freezing")
    assert frozen.difference == stats.paired_difference([0.61, 0.62, 0.63], cls)
    assert frozen.verdict == "supported"
    # its fine-tuned side is the tokens study's [CLS] run: adaptive seeds grow the tokens study for it
    assert set(frozen.runs) == {f"frozen-m-rte-{s}" for s in seeds} | {f"tokens-rte-{s}" for s in seeds}

    cross = _one(claims, "p2.cross")
    assert cross.difference == stats.paired_difference([0.70 - 0.001 * s for s in seeds], [0.70] * 3)
    assert cross.verdict == "supported" and cross.scope == "rte after mrpc vs after rte"
    # the arms each row reads, in its study's option language: what a later round of adaptive seeds trains
    assert token.arms == {"tokens": ("cls", "mean")} and k2.arms == {"dims": ("2", "all")}
    assert lower.arms == {"layers": ("1", "2", "4")} and higher.arms == {"layers": ("3", "4")}
    assert frozen.arms == {"tokens": ("cls",)} and cross.arms == {}


def _learning(learned: bool) -> dict:
    return {"learning": {"learned": learned, "reason": "" if learned else "final training loss 0.69 ..."}}


def test_a_head_that_did_not_learn_makes_the_claim_inconclusive():
    deep, orig = [0.70, 0.72, 0.71], [0.65, 0.66, 0.64]

    def rows(flags: list[bool]) -> list[C.RunRow]:
        out = [C.RunRow(f"d{s}", "deepen-finetune", {"model": f"{DEEPENED_PREFIX}m", "task": "rte", "seed": s},
                        {"final.combined_score": v}, _learning(True)) for s, v in enumerate(deep, 1)]
        out += [C.RunRow(f"o{s}", "deepen-finetune", {"model": "m", "task": "rte", "seed": s},
                         {"final.combined_score": v}, _learning(f)) for (s, v), f in zip(enumerate(orig, 1), flags,
                                                                                        strict=True)]
        return out

    learned = _one(C.paper1_claims(rows([True, True, True])), "p1.deepen-finetune")
    assert learned.verdict == "supported" and learned.heads == (6, 6) and learned.learned_share == 1.0
    flagged = _one(C.paper1_claims(rows([True, False, True])), "p1.deepen-finetune")
    assert flagged.difference == learned.difference  # the measurement stays; only the verdict changes
    assert flagged.verdict == "inconclusive" and flagged.heads == (5, 6)
    assert "1 of 6 heads did not learn" in flagged.note and "--feature-norm standardize" in flagged.note
    assert C.TRAIN_LONGER in flagged.note  # what replicate itself can change: more training steps
    assert flagged.to_dict()["learned_share"] == pytest.approx(5 / 6)
    # the flat metric `learned` (1/0) of a run without a payload counts as well
    flat = [C.RunRow(r.id, r.experiment, r.axes, {**r.metrics, "learned": 0.0 if r.id == "o1" else 1.0})
            for r in rows([True] * 3)]
    assert _one(C.paper1_claims(flat), "p1.deepen-finetune").heads == (5, 6)


def test_the_cross_claim_reads_the_heads_of_task_a_only():
    """Both scores come from task A's head (trained at stage A, frozen after it): a flagged A head makes the row
    inconclusive, a flagged B head does not (its stage moves the encoder either way)."""
    def cross(seed: int, a_learned: bool, b_learned: bool) -> C.RunRow:
        runs = [{"kind": "stage", "stage": 1, "task": "rte", "learned": a_learned},
                {"kind": "stage", "stage": 2, "task": "mrpc", "learned": b_learned}]
        return _study("cross", seed, [({"source": "after rte", "target": "rte"}, 0.70),
                                      ({"source": "after mrpc", "target": "rte"}, 0.70 - 0.001 * seed)],
                      payload={"summary": {"tasks": ["rte", "mrpc"]}, "runs": runs})

    b_flagged = _one(C.paper2_claims([cross(s, True, False) for s in (1, 2, 3)]), "p2.cross")
    assert b_flagged.heads == (3, 3) and b_flagged.verdict == "supported"
    a_flagged = _one(C.paper2_claims([cross(s, s != 2, True) for s in (1, 2, 3)]), "p2.cross")
    assert a_flagged.heads == (2, 3) and a_flagged.verdict == "inconclusive" and "1 of 3 heads" in a_flagged.note


def test_study_heads_are_read_per_comparison_from_the_run_records():
    def tokens(seed: int, flags: dict[str, bool]) -> C.RunRow:
        scores = {"cls": 0.80, "mean": 0.805 + 0.001 * seed, "max": 0.801}
        runs = [{"token_strategy": t, "seed": seed, "score": v, "learned": flags.get(t, True)}
                for t, v in scores.items()]
        return _study("tokens", seed, [({"token": t}, v) for t, v in scores.items()], payload={"runs": runs})

    claims = C.paper2_claims([tokens(s, {"mean": s != 2}) for s in (1, 2, 3)])
    mean, best = _one(claims, "p2.tokens", "mean vs cls, rte"), _one(claims, "p2.tokens", "max vs cls, rte")
    assert mean.verdict == "inconclusive" and mean.heads == (5, 6) and "1 of 6 heads" in mean.note
    assert best.heads == (6, 6) and best.verdict == stats.verdict(best.difference, "no_worse", TOLERANCES["p2.tokens"])
    assert best.verdict == "supported"


def test_a_token_or_layer_that_does_better_supports_as_good_as():
    """"As good as" is non-inferiority: a token well above [CLS] (or a layer above the last) supports the claim;
    the two-sided equivalence rule would call it "not supported"."""
    seeds = (1, 2, 3)
    rows = [_study("tokens", s, [({"token": "cls"}, 0.78 + 0.001 * s), ({"token": "max"}, 0.83 + 0.002 * s)])
            for s in seeds]
    rows += [_study("layers", s, [({"layer": i}, v) for i, v in enumerate([0.5, 0.52, 0.55, 0.84 + 0.001 * s, 0.80])])
             for s in seeds]
    claims = C.paper2_claims(rows)
    token, higher = _one(claims, "p2.tokens"), _one(claims, "p2.layers.higher")
    for claim in (token, higher):
        assert claim.kind == "no_worse" and claim.difference.low > claim.tolerance
        assert claim.verdict == "supported"
        assert stats.verdict(claim.difference, "as_good", claim.tolerance) == "not supported"
    assert "better counts" in token.rule
    # losing more than the tolerance is still "not supported"
    worse = [_study("tokens", s, [({"token": "cls"}, 0.80 + 0.001 * s), ({"token": "max"}, 0.74 + 0.002 * s)])
             for s in seeds]
    assert _one(C.paper2_claims(worse), "p2.tokens").verdict == "not supported"


def test_two_sides_at_chance_are_never_as_good_as_each_other():
    """The smoke run of paper 2 once found "k=2 as good as all dims" between two heads at 0.49-0.56."""
    def dims(seed: int, k2: float, full: float, chance: float | None) -> C.RunRow:
        row = _study("dims", seed, [({"dims": "all", "sample": 0}, full), ({"dims": "random:2", "sample": 0}, k2)],
                     task="sst2")
        return C.RunRow(row.id, row.experiment, row.axes, {}, None, row.points,
                        chance={} if chance is None else {"sst2": chance})

    at_chance = [(0.505, 0.51), (0.51, 0.505), (0.50, 0.505)]
    unguarded = _one(C.paper2_claims([dims(s, a, b, None) for s, (a, b) in enumerate(at_chance, 1)]),
                     "p2.dims", "k=2 vs all, sst2")
    assert unguarded.verdict == "supported"  # what the rule alone says
    guarded = _one(C.paper2_claims([dims(s, a, b, 0.5) for s, (a, b) in enumerate(at_chance, 1)]),
                   "p2.dims", "k=2 vs all, sst2")
    assert guarded.difference == unguarded.difference
    assert guarded.verdict == "inconclusive" and "both sides at chance level" in guarded.note
    learned = [(0.80, 0.81), (0.81, 0.80), (0.805, 0.81)]  # far above chance: the rule decides
    assert _one(C.paper2_claims([dims(s, a, b, 0.5) for s, (a, b) in enumerate(learned, 1)]),
                "p2.dims", "k=2 vs all, sst2").verdict == "supported"


def test_lower_layers_at_chance_can_still_be_weaker():
    """Only a comparison of two chance-level sides is guarded: lower layers at chance below a learned last layer
    support "lower layers are weaker"."""
    rows = [C.RunRow(f"l{s}", "layers", {"task": "sst2", "seed": s}, {}, None,
                     tuple(({"layer": i}, v) for i, v in enumerate([0.5, 0.5, 0.51, 0.8 + 0.01 * s, 0.81])),
                     chance={"sst2": 0.5}) for s in (1, 2, 3)]
    lower = _one(C.paper2_claims(rows), "p2.layers.lower")
    assert lower.verdict == "supported" and lower.sides["reference"].mean == pytest.approx(0.81)


def test_every_layer_row_says_which_text_fitted_the_head_and_the_final_agreement():
    head = {"mode": "fit", "head_from": {"from": "original"},
            "fit": {"corpus": {"kind": "glue-train", "tasks": ["cola", "sst2"], "split": "train",
                               "train_sentences": 960}, "heldout_masked_top1": 0.25,
                    "measured_texts": {"kind": "glue", "task": "sst2", "split": "validation", "num_sentences": 64},
                    "fit_overlap": {"measured_in_fit": 0, "measured": 64}}}
    rows = []
    for seed in (1, 2):
        row = _recon(seed, [0.3, 0.4, 0.5])
        records = [{**r, "final_agreement": a} for r, a in zip(row.payload["records"], [0.2, 0.6, 1.0],
                                                                   strict=True)]
        rows.append(C.RunRow(row.id, row.experiment, row.axes, {}, {**row.payload, "records": records,
                                                                    "head": head}))
    claim = _one(C.paper1_claims(rows), "p1.every-layer")
    assert "the original's fitted head (fit on glue-train cola,sst2 train, 960 sentences" in claim.note
    assert "held-out masked top-1 0.250" in claim.note and "FLAGGED" not in claim.note
    assert "measured on glue sst2/validation (64 sentences)" in claim.note
    assert "0.20 at layer 0" in claim.note and "1.00 at 2" in claim.note
    assert claim.details["per_layer_final_agreement"]["2"]["mean"] == pytest.approx(1.0)
    assert claim.heads is None and claim.learned_share is None  # a lens claim rests on no trained head


def _tuned(seed: int, logit: list[float], tuned: list[float], *, heldout: bool = False,
           flat: bool = True) -> C.RunRow:
    """A ``reconstruct --lens tuned`` run: both lenses' KL to the final distribution per hidden state."""
    metrics = {}
    if flat:
        metrics = {f"lens.{kind}.layer{layer}.kl_to_final": value for kind, values in (("logit", logit),
                                                                                         ("tuned", tuned))
                   for layer, value in enumerate(values)}
        metrics["lens.logit.layer0.top1"] = 0.5  # other lens metrics are not KL
    if heldout:
        metrics |= {f"lens.heldout.{kind}.layer{layer}.kl": value / 2 for kind, values in (("logit", logit),
                                                                                            ("tuned", tuned))
                    for layer, value in enumerate(values)}
    records = [{"lens": kind, "layer": layer, "kl_to_final": value}
               for kind, values in (("logit", logit), ("tuned", tuned)) for layer, value in enumerate(values)]
    payload = {"lens": {"records": records, "tuned": {"corpus": {"kind": "glue-train", "train_sentences": 256},
                                                      "options": {"steps": 100}, "last_layer_deviation": 0.0}}}
    return C.RunRow(f"tuned-{seed}", "tuned-lens", {"seed": seed}, metrics, payload, options={"model": "m"})


def test_tuned_lens_claim_is_the_weakest_layer_s_paired_difference():
    from scipy import stats as scipy_stats

    logit = [4.0, 3.0, 1.5, 0.0]
    seeds = (1, 2, 3)
    tuned = {s: [1.0 + 0.1 * s, 0.8, 0.9 + 0.05 * s, 0.001] for s in seeds}  # layer 3 is the last: not counted
    rows = [_tuned(s, logit, tuned[s], heldout=True) for s in seeds]
    claim = _one(C.paper1_claims(rows), "p1.tuned-lens")
    # known answer: layer 2 is the weakest in every seed, tuned - logit = -0.6 + 0.05 s
    expected = [-0.6 + 0.05 * s for s in seeds]
    assert claim.difference.mean == pytest.approx(-0.5) and claim.difference.n == 3
    assert claim.difference.std == pytest.approx(0.05)
    low, high = scipy_stats.t.interval(0.95, df=2, loc=sum(expected) / 3, scale=scipy_stats.sem(expected))
    assert (claim.difference.low, claim.difference.high) == (pytest.approx(low), pytest.approx(high))
    assert claim.kind == "worse" and claim.verdict == "supported" and claim.scope == "m"
    assert claim.details["weakest_layer"] == {"1": 2, "2": 2, "3": 2}
    # the measurement lists both lenses' mean KL per hidden state, the last one marked
    assert "0: 4.000/1.200" in claim.measurement and "2: 1.500/1.000" in claim.measurement
    assert "3 (last): 0.000/0.001" in claim.measurement
    layer0 = claim.details["per_layer_kl"]["0"]
    assert layer0["difference"]["mean"] == pytest.approx(-2.8) and layer0["logit"]["n"] == 3
    assert claim.details["heldout_per_layer_kl"]["1"]["logit"]["mean"] == pytest.approx(1.5)
    assert "translators trained on glue-train (256 sentences, 100 steps)" in claim.note
    assert claim.heads is None  # a lens claim rests on no fine-tuned head
    # the payload's records give the same claim when the flat metrics are missing
    from_payload = _one(C.paper1_claims([_tuned(s, logit, tuned[s], flat=False) for s in seeds]), "p1.tuned-lens")
    assert from_payload.difference == claim.difference
    # one layer where the tuned lens is further away in every seed: not supported
    behind = {s: [1.0, 3.2 + 0.01 * s, 0.9, 0.0] for s in seeds}
    worse = _one(C.paper1_claims([_tuned(s, logit, behind[s]) for s in seeds]), "p1.tuned-lens")
    assert worse.difference == stats.summarize([behind[s][1] - logit[1] for s in seeds])
    assert worse.verdict == "not supported" and worse.details["weakest_layer"]["1"] == 1
    one = _one(C.paper1_claims(rows[:1]), "p1.tuned-lens")
    assert one.verdict == "inconclusive" and "one seed" in one.note


def test_missing_runs_still_give_inconclusive_rows():
    for paper in PAPERS:
        claims = C.claims_for(paper, [])
        assert claims and all(c.verdict == "inconclusive" for c in claims)


@pytest.mark.parametrize("budget", sorted(BUDGETS))
@pytest.mark.parametrize("paper", sorted(PAPERS))
def test_every_protocol_is_a_valid_spec(paper, budget, tmp_path):
    """The same validation as `sweep --dry-run`: every run's config is built by its command's config class."""
    plan = protocol(paper, budget, models=("bert-base-uncased", "roberta-base") if paper == "paper1" else (None,))
    spec = parse_spec(plan.to_spec(), runs_dir=tmp_path, dry_run=True)
    assert spec.name == plan.name and len(spec.runs) > 0
    experiments = {e for _, e, _, _ in spec.members}
    assert {e.name for e in plan.experiments} <= experiments
    if budget in ("small", "full"):
        assert len(BUDGETS[budget].seeds) >= 3


def test_config_refuses_bad_options():
    with pytest.raises(BertscopeError, match="paper"):
        api.ReplicateConfig()
    with pytest.raises(BertscopeError, match="budget"):
        api.ReplicateConfig(paper="paper1", budget="huge")
    with pytest.raises(BertscopeError):
        api.ReplicateConfig(paper="paper2", tasks="sst2,nosuchtask")


@pytest.mark.parametrize("paper", sorted(PAPERS))
def test_data_dir_reaches_every_run_that_reads_glue_and_keeps_the_run_ids(paper, glue_dir, tmp_path):
    from bertscope.sweep.commands import ANALYSES

    plain = protocol_of(api.ReplicateConfig(paper=paper))
    local = protocol_of(api.ReplicateConfig(paper=paper, data_dir=str(glue_dir)))
    glue_runs = 0
    for experiment in local.experiments:
        reads_glue = "data_dir" in ANALYSES[experiment.command].config.field_names()
        assert (experiment.base.get("data_dir") == str(glue_dir)) == reads_glue
        glue_runs += reads_glue
    assert glue_runs > 0
    spec = parse_spec(local.to_spec(), runs_dir=tmp_path, dry_run=True)
    assert [r.id for r in spec.runs] == [r.id for r in parse_spec(plain.to_spec(), runs_dir=tmp_path, dry_run=True).runs]
    assert all(r.options.get("data_dir") == str(glue_dir) for r in spec.runs
               if "data_dir" in ANALYSES[r.command].config.field_names())
    with pytest.raises(BertscopeError, match="--data-dir"):
        api.ReplicateConfig(paper=paper, data_dir=str(tmp_path / "nowhere"))


@pytest.mark.parametrize("paper", ["paper1", "paper2"])
def test_training_size_overrides_every_fine_tuning_run_and_is_in_the_command(paper, tmp_path):
    budget = protocol_of(api.ReplicateConfig(paper=paper, budget="decide"))
    config = api.ReplicateConfig(paper=paper, budget="decide", max_train="all", epochs=3, out=str(tmp_path / "o"))
    sized = protocol_of(config)
    tuned = [e for e in sized.experiments if "max_train" in e.base]
    assert tuned and all(e.base["max_train"] is None and e.base["epochs"] == 3 for e in tuned)
    assert [e.name for e in tuned] == [e.name for e in budget.experiments if "max_train" in e.base]
    assert all(e.base["max_train"] == 2000 and e.base["epochs"] == 1 for e in budget.experiments if "max_train" in e.base)
    # other runs are untouched, and a changed size is a different run (its own id), not a resumed one
    assert [e.base for e in sized.experiments if "max_train" not in e.base] == \
        [e.base for e in budget.experiments if "max_train" not in e.base]
    old = {r.id for r in parse_spec(budget.to_spec(), runs_dir=tmp_path, dry_run=True).runs}
    new = {r.id for r in parse_spec(sized.to_spec(), runs_dir=tmp_path, dry_run=True).runs
           if "max_train" in r.options}
    assert new and not new & old
    result = api.replicate(paper=paper, budget="decide", max_train="all", epochs=3, out=str(tmp_path / "o"),
                           dry_run=True, progress=False)
    assert result.exit_code == 0
    assert "--max-train all --epochs 3" in (tmp_path / "o" / "spec.yaml").read_text().splitlines()[1]


@pytest.mark.parametrize("paper", ["paper1", "paper2"])
def test_decide_trains_a_small_task_on_its_whole_training_set(paper, tmp_path):
    """A task with fewer than ``train_all_below`` official training examples trains on all of them, in its own block
    under the same experiment name; a large task keeps the budget's size and its run ids; --max-train wins."""
    budget = BUDGETS["decide"]
    assert budget.train_all_below is not None and GLUE_SIZES["sst2"][0] >= budget.train_all_below
    sst2 = protocol(paper, "decide", tasks=("sst2",))
    mixed = protocol(paper, "decide", tasks=("sst2", "stsb", "mrpc"))
    tuned = [e for e in mixed.experiments if "max_train" in e.base and e.name != "cross"]
    size_of = {task: e.base["max_train"] for e in tuned for task in e.grid["task"]}
    assert size_of == {"sst2": 2000, "stsb": GLUE_SIZES["stsb"][0], "mrpc": GLUE_SIZES["mrpc"][0]}
    # one block for sst2 and one per small task (their sizes differ), each experiment name kept
    names = [e.name for e in sst2.experiments if "max_train" in e.base and e.name != "cross"]
    assert sorted({e.name for e in tuned}) == sorted(names)
    assert all(sum(e.name == name for e in tuned) == 3 for name in names)

    def ids(plan, task):
        runs = parse_spec(plan.to_spec(), runs_dir=tmp_path, dry_run=True).runs
        return {r.id for r in runs if r.options.get("task") == task}

    assert ids(sst2, "sst2") <= ids(mixed, "sst2")  # the SST-2 runs measured before are the same runs
    # the caller's --max-train is every task's size, and no task is split off
    fixed = protocol(paper, "decide", tasks=("sst2", "stsb"), finetune={"max_train": 500})
    assert all(e.base["max_train"] == 500 for e in fixed.experiments if "max_train" in e.base)
    assert len(fixed.experiments) == len(sst2.experiments)
    if paper == "paper2":  # cross trains with its first task's size
        cross = next(e for e in protocol(paper, "decide", tasks=("stsb", "sst2")).experiments if e.name == "cross")
        assert cross.base["max_train"] == GLUE_SIZES["stsb"][0] and cross.base["tasks"] == "stsb,sst2"


def test_a_task_trained_on_its_whole_set_is_read_by_the_same_claims(tiny_checkpoint, glue_dir, tmp_path,
                                                                    monkeypatch, one_thread):
    """End to end: with RTE at the budget's size and WNLI (635 examples) on all of it, the deepen-finetune claim has
    a row per task, each resting on runs of its own size."""
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BERTSCOPE_GLUE_DIR", str(glue_dir))
    monkeypatch.setitem(BUDGETS, "test", replace(BUDGETS["test"], train_all_below=1000))
    model = str(tiny_checkpoint("bert", num_layers=2))
    result = api.replicate(paper="paper1", budget="test", model=model, tasks="rte,wnli", out=str(tmp_path / "out"),
                           progress=False)
    assert result.exit_code == 0 and result.sweep.executed["failed"] == 0
    payload = json.loads((tmp_path / "out" / "claims.json").read_text())
    runs = {r["id"]: r for r in payload["runs"]}
    rows = [c for c in payload["claims"] if c["id"] == "p1.deepen-finetune"]
    assert len(rows) == 2
    sizes = {}
    for row in rows:
        assert row["heads"]["total"] == 4  # 2 models x 2 seeds, both blocks' runs found
        tasks = {runs[r]["axes"]["task"] for r in row["runs"]}
        assert len(tasks) == 1
        sizes[tasks.pop()] = {runs[r]["options"]["max_train"] for r in row["runs"]}
    assert sizes == {"rte": {BUDGETS["test"].finetune["max_train"]}, "wnli": {GLUE_SIZES["wnli"][0]}}


@pytest.mark.parametrize(("options", "message"), [({"max_train": "1"}, "--max-train"), ({"max_train": "x"}, "--max-train"),
                                                  ({"epochs": 0}, "--epochs")])
def test_training_size_is_checked_in_one_line(options, message):
    with pytest.raises(BertscopeError, match=message):
        api.ReplicateConfig(paper="paper2", budget="decide", **options)


def test_dry_run_lists_runs_and_runs_nothing(tmp_path):
    result = api.replicate(paper="paper2", budget="smoke", out=str(tmp_path / "out"), dry_run=True, progress=False)
    assert result.sweep.dry_run and result.sweep.plan and not result.claims
    assert (tmp_path / "out" / "spec.yaml").is_file() and not (tmp_path / "out" / "replicate.db").exists()


def test_end_to_end_tiny_budget_writes_claims_and_resumes(tiny_checkpoint, glue_dir, tmp_path, monkeypatch,
                                                          one_thread):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BERTSCOPE_GLUE_DIR", str(glue_dir))  # the protocol's runs read GLUE from the environment
    model = str(tiny_checkpoint("bert", num_layers=2))
    options = {"paper": "paper1", "budget": "test", "model": model, "tasks": "rte", "out": str(tmp_path / "out"),
               "progress": False}
    first = api.replicate(**options)
    assert first.sweep.executed["failed"] == 0 and first.sweep.executed["done"] > 0
    for name in ("claims.md", "claims.json", "claims.html"):
        assert (tmp_path / "out" / name).is_file()
    payload = json.loads((tmp_path / "out" / "claims.json").read_text())
    ids = {c["id"] for c in payload["claims"]}
    assert ids == {"p1.every-layer", "p1.across-families", "p1.duplicated-layers", "p1.deepen-finetune",
                   "p1.layer-scan", "p1.tuned-lens"}
    assert len(payload["claims"]) == 6  # one row each: one model, one task
    assert all(c["verdict"] in stats.VERDICTS for c in payload["claims"])
    assert all(r["options"] for r in payload["runs"])  # each run's effective options are recorded
    by_id = {c["id"]: c for c in payload["claims"]}
    deepen = by_id["p1.deepen-finetune"]  # 2 models x 2 seeds, each head's flag read from its stored result
    assert deepen["heads"]["total"] == 4 and deepen["learned_share"] == deepen["heads"]["learned"] / 4
    if deepen["heads"]["learned"] < 4:
        assert deepen["verdict"] == "inconclusive" and "did not learn" in deepen["note"]
    every = by_id["p1.every-layer"]
    assert every["heads"] is None and "measured on" in every["note"]
    assert every["details"]["per_layer_final_agreement"]["2"]["mean"] == pytest.approx(1.0)  # the last layer
    assert "the original's" in by_id["p1.duplicated-layers"]["note"]  # decoded with the original's head
    tuned = by_id["p1.tuned-lens"]  # both lenses per hidden state 0..2, per seed; at the last both are ~0
    assert tuned["difference"]["n"] == 2 and set(tuned["details"]["per_layer_kl"]) == {"0", "1", "2"}
    assert tuned["details"]["per_layer_kl"]["2"]["logit"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert "2 (last)" in tuned["measurement"] and "never on the measured text" in tuned["note"]
    assert "<table>" in (tmp_path / "out" / "claims.html").read_text()
    # the same invocation again runs nothing new and gives the same claims
    second = api.replicate(**options)
    assert second.sweep.executed == {"done": 0, "failed": 0}
    assert second.sweep.skipped == first.sweep.executed["done"]
    assert [c.to_dict() for c in second.claims] == [c.to_dict() for c in first.claims]
