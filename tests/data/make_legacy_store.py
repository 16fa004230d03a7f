"""Writes legacy_store.sql: a result store as bertscope wrote it before commands declared their own identity rule.

Run it with the code of that time (commit fd61b70, whose sweep ignores ``CommandInfo.not_identity``) and this
checkout's ``tests/sweep_toy.py``::

    mkdir -p /tmp/bertscope-base && git archive fd61b70 src | tar -x -C /tmp/bertscope-base
    PYTHONPATH=/tmp/bertscope-base/src python tests/data/make_legacy_store.py

Machine-specific values are scrubbed (environment, worker, git commit, timestamps) and the runs folder's absolute path
becomes ``@RUNS_DIR@``, which the test replaces; the SQL text is what is committed (``*.db`` is ignored).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path("/tmp/bertscope-legacy")


def main() -> None:
    from bertscope import api

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    store = WORK / "results.db"
    result = api.sweep(spec=str(HERE / "legacy.yaml"), store=str(store), progress=False)
    assert result.counts == {"pending": 0, "running": 0, "done": 5, "failed": 1}, result.counts
    runs_dir = str(WORK / "results-runs")
    conn = sqlite3.connect(store)
    for i, (rid,) in enumerate(conn.execute("SELECT id FROM runs ORDER BY created, id").fetchall()):
        conn.execute("UPDATE runs SET config=replace(config, ?, '@RUNS_DIR@'), environment=NULL, worker=NULL, "
                     "git_commit=NULL, created=?, started=?, finished=?, duration=0.01 WHERE id=?",
                     (runs_dir, 1000.0 + i, 2000.0 + i, 3000.0 + i, rid))
    for rid, data in conn.execute("SELECT run_id, data FROM payloads").fetchall():
        text = zlib.decompress(data).decode("utf-8").replace(runs_dir, "@RUNS_DIR@")
        conn.execute("UPDATE payloads SET data=? WHERE run_id=?", (zlib.compress(text.encode("utf-8"), 6), rid))
    conn.execute("UPDATE sweeps SET spec_path='legacy.yaml', created=1000.0, updated=1000.0")
    conn.commit()
    ids = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY id")]
    header = ["-- A bertscope result store written by commit fd61b70 (make_legacy_store.py, legacy.yaml).",
              f"-- Run ids: {json.dumps(ids)}"]
    (HERE / "legacy_store.sql").write_text("\n".join([*header, *conn.iterdump()]) + "\n", encoding="utf-8")
    conn.close()


if __name__ == "__main__":
    main()
