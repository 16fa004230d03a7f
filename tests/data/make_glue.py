"""Write tests/data/glue: small synthetic GLUE files in the original tsv layout, for tests that need no data folder.

    python tests/data/make_glue.py

Every row is made up here from a few word lists and templates (seeded, so the files are reproducible); none is
taken from GLUE. The layout is the one bertscope.data.glue reads and the local copy in ../shared/data/glue has: the
same folders, file names, header lines (none in CoLA's train/dev), label spellings, MRPC's byte-order mark, CoLA's
dev file without a final newline, and QNLI without a train file. Labels follow from the words (a positive word makes
a positive SST-2 sentence, a shared clause an entailment...), so a head can learn something from them.
"""

from __future__ import annotations

import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "glue"
SIZES = {"train": 128, "dev": 64, "test": 32}

NAMES = ["the cat", "a dog", "my friend", "the teacher", "our neighbour", "the child", "a farmer", "the doctor",
         "his sister", "the pilot", "a student", "the old man"]
VERBS = ["sees", "likes", "helps", "finds", "visits", "watches", "calls", "follows"]
OBJECTS = ["the house", "a river", "the garden", "a small boat", "the market", "the city", "a new car", "the school"]
PLACES = ["in the morning", "after dinner", "near the park", "on monday", "at night", "during the summer"]
GOOD = ["wonderful", "delightful", "brilliant", "charming", "moving", "funny", "beautiful", "great"]
BAD = ["boring", "dull", "awful", "tedious", "clumsy", "bland", "painful", "terrible"]
FILMS = ["the film", "this movie", "the story", "the acting", "the ending", "the script", "the music", "the cast"]


def clause(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"


def sentence(rng: random.Random) -> str:
    return f"{clause(rng)} {rng.choice(PLACES)} ."


def write(path: Path, rows: list[list[str]], *, bom: bool = False, final_newline: bool = True) -> None:
    text = "\n".join("\t".join(row) for row in rows) + ("\n" if final_newline else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\ufeff" if bom else "").encode("utf-8") + text.encode("utf-8"))


def cola(rng: random.Random, split: str, n: int) -> list[list[str]]:
    if split == "test":
        return [["index", "sentence"]] + [[str(i), sentence(rng)] for i in range(n)]
    rows = []
    for _ in range(n):
        words = sentence(rng).split()
        label = rng.random() < 0.7  # like CoLA, mostly acceptable
        if not label:
            rng.shuffle(words)
            words = [*(w for w in words if w != "."), "."]
        rows.append(["syn01", "1" if label else "0", "" if label else "*", " ".join(words)])
    return rows


def sst2(rng: random.Random, split: str, n: int) -> list[list[str]]:
    def one() -> tuple[str, int]:
        label = rng.randrange(2)
        word = rng.choice(GOOD if label else BAD)
        return f"{rng.choice(FILMS)} is {word} and {rng.choice(FILMS)} is {rng.choice(GOOD + BAD)}", label
    if split == "test":
        return [["index", "sentence"]] + [[str(i), one()[0]] for i in range(n)]
    return [["sentence", "label"]] + [[s, str(y)] for s, y in (one() for _ in range(n))]


def pair(rng: random.Random) -> tuple[str, str, int]:
    """Two sentences and 1 when the second restates the first (same clause, another place), else 0."""
    first = clause(rng)
    label = rng.randrange(2)
    second = first if label else clause(rng)
    return f"{first} {rng.choice(PLACES)} .", f"{second} {rng.choice(PLACES)} .", label


def mrpc(rng: random.Random, split: str, n: int) -> list[list[str]]:
    ids = [str(1000 + 2 * i) for i in range(2 * n)]
    if split == "test":
        rows = [["index", "#1 ID", "#2 ID", "#1 String", "#2 String"]]
        return rows + [[str(i), ids[2 * i], ids[2 * i + 1], *pair(rng)[:2]] for i in range(n)]
    rows = [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]]
    for i in range(n):
        a, b, y = pair(rng)
        rows.append([str(y), ids[2 * i], ids[2 * i + 1], a, b])
    return rows


def stsb(rng: random.Random, split: str, n: int) -> list[list[str]]:
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
    rows = [header if split == "test" else [*header, "score"]]
    for i in range(n):
        a, b, y = pair(rng)
        row = [str(i), "main-synthetic", "synthetic", "2026", f"{i:04d}", "none", "none", a, b]
        score = (3.0 + 2.0 * rng.random()) if y else 2.5 * rng.random()
        rows.append(row if split == "test" else [*row, f"{score:.3f}"])
    return rows


def nli(labels: tuple[str, str], columns: tuple[str, str], question: bool = False):
    """RTE, WNLI and QNLI: an index, two texts and ``labels[1]`` when the second follows from the first."""
    def make(rng: random.Random, split: str, n: int) -> list[list[str]]:
        rows = [["index", *columns] if split == "test" else ["index", *columns, "label"]]
        for i in range(n):
            a, b, y = pair(rng)
            if question:
                a = f"who {rng.choice(VERBS)} {rng.choice(OBJECTS)} ?"
            rows.append([str(i), a, b] if split == "test" else [str(i), a, b, labels[y]])
        return rows
    return make


TASKS = {
    "CoLA": cola,
    "SST-2": sst2,
    "MRPC": mrpc,
    "STS-B": stsb,
    "RTE": nli(("not_entailment", "entailment"), ("sentence1", "sentence2")),
    "WNLI": nli(("0", "1"), ("sentence1", "sentence2")),
    "QNLI": nli(("not_entailment", "entailment"), ("question", "sentence"), question=True),
}


def main(root: Path = ROOT) -> None:
    for seed, (folder, make) in enumerate(TASKS.items()):
        for split, n in SIZES.items():
            if folder == "QNLI" and split == "train":
                continue  # as in the local copy: QNLI's train file is missing
            rows = make(random.Random(f"{seed}-{split}"), split, n)
            write(root / folder / f"{split}.tsv", rows, bom=folder == "MRPC" and split != "test",
                  final_newline=not (folder == "CoLA" and split == "dev"))
    print(f"wrote {root}")


if __name__ == "__main__":
    main()
