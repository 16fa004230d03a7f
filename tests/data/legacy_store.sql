-- A bertscope result store written by commit fd61b70 (make_legacy_store.py, legacy.yaml).
-- Run ids: ["toy-3061740c3043", "toy-73e3f818c127", "toy-91866901b6af", "toy-a672f388ff0f", "toy-c5c6a9a16fa8", "toy-make-f84a282cabd9"]
BEGIN TRANSACTION;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE payloads (run_id TEXT PRIMARY KEY REFERENCES runs(id), data BLOB NOT NULL);
INSERT INTO "payloads" VALUES('toy-3061740c3043',X'789C558E4F0F82300CC5BF0AD9597173A089270E5EBC78C07832C610E8906452B28D4442F8EE76FE037A68FAF2EB6B5FCF72AC5555B25DD0B3277511F245C02C404142D2F8C00234CD75ABB5271AA021C9DF7B2AAB3C5399B640323799BD4FB4C6727462EB48B0243D1F4FB7FD214D560EBBA5E41BB18D782E7924196D35064B03D6FEAE0CFE678E063ED97C2254CA82FB673040B8F0864BCF74D681F18880C3467C5D74656462643C8C453C83EB2994919CD5701D5EC26654A0');
INSERT INTO "payloads" VALUES('toy-a672f388ff0f',X'789C558F4D0F82300C86FF0AD959717CA9F1C4C18B170F184FC698055A2499946C904808FFDDCEA8E00E4DDF3E7DDB6E1039D5589562E70DE2C931F4E5C21316A0601171FAA00234E775A7B5231AA06129DF7DA82AC750690B2C73A3EC7DA635959393BA968548B3F3F174DB1FB274D552BF54EB4D88D1768B2851705763A83460ED77CAE876E664800BB12FDD458468A1FDDD608071E10C974168D5837188414B4DF071F194890513E3DF06C91F0C2718F8511CCD5F325EC71755805580');
INSERT INTO "payloads" VALUES('toy-make-f84a282cabd9',X'789CAB564ACECF4BCB4C57B252A856CA4F4B2B4E2D01320DF48C4C75149492139333525380FC92A2D254203FBF1424A9E41014EA171CEFE219E4A05F925FA99B9B989DAA9B666192686461949C989462A9545B0B008BBD1A92');
INSERT INTO "payloads" VALUES('toy-73e3f818c127',X'789C6D8E310F82301085FF8AE92C480B427572707171D03819636AB9A2B158D2422221FC77AF44232676B8DCCBD7F7DE75449A87BA156439E9C813270DA3E98438801C458C6B6972D0B893D5EEB0DD9FD79BDD6A569B3628C51D02C513C13893E2922F88F769800A3F47438A1237EF54423B4029AD70D791D6C6D73E1AAD5198A6FE5392C5102B4EB9A42CF3F995358505E73E29BDEF94C6C27039E33E482907F570039BA3B6803CF78E6347B468C17A86A036157DDB30E6CBE89745619AFC303666094BC72FEB4FFD0BDBCF5DF6');
INSERT INTO "payloads" VALUES('toy-91866901b6af',X'789C6D8E310FC2201085FF8A61B6B520D6D6C9C1C5C541E3648C417A5423950630D134FDEF1E8DA6359181DCBB8FF71E0D91E6AEAE25598C1AF2C49BC5C978441C4081628A63650AD03893E576BFD99D56EBED72E2CD2BAAC40D229571C13226C5B9C849F069801A1F275D8A12D7E054423B4029AD709781D626D4DE1F5AA3300FFFA724A7599AE6093DA74285FCDA9AD28273DF9436744A6301173C66590852CA81EFFEC066A82D202F82E3D0102D5E600343E04D4D3F368CE919ED198B29FF61AC6734E62C1D9E797B6CDFDD015DFC');
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    config TEXT NOT NULL,            -- JSON: every option the run was built with
    identity TEXT NOT NULL,          -- JSON: what the id hashes
    depends_on TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    error TEXT,
    traceback TEXT,
    metrics TEXT,                    -- JSON: result.metrics()
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,                    -- when the run was handed to a worker
    finished REAL,                   -- when its outcome was committed
    duration REAL,                   -- seconds the command itself ran (measured in the worker)
    worker TEXT,                     -- host:pid that ran it
    environment TEXT,                -- JSON: results.environment_info() in the worker
    git_commit TEXT
);
INSERT INTO "runs" VALUES('toy-3061740c3043','toy','{"crash": false, "fail": false, "log": null, "model": null, "out": "@RUNS_DIR@/toy-3061740c3043", "progress": false, "seed": 3, "sleep": 0.0, "x": 1.0}','{"crash": false, "fail": false, "log": null, "model": null, "seed": 3, "sleep": 0.0, "x": 1.0}','[]','done',NULL,NULL,'{"offset": 0.0, "score": 1.03}',1,1000.0,2000.0,3000.0,0.01,NULL,NULL,NULL);
INSERT INTO "runs" VALUES('toy-a672f388ff0f','toy','{"crash": false, "fail": false, "log": null, "model": null, "out": "@RUNS_DIR@/toy-a672f388ff0f", "progress": false, "seed": 3, "sleep": 0.0, "x": 2.0}','{"crash": false, "fail": false, "log": null, "model": null, "seed": 3, "sleep": 0.0, "x": 2.0}','[]','done',NULL,NULL,'{"offset": 0.0, "score": 4.03}',1,1003.0,2003.0,3003.0,0.01,NULL,NULL,NULL);
INSERT INTO "runs" VALUES('toy-make-f84a282cabd9','toy-make','{"cached": true, "offset": 0.25, "out": "@RUNS_DIR@/toy-make-f84a282cabd9"}','{"cached": true, "offset": 0.25}','[]','done',NULL,NULL,'{"offset": 0.25}',1,1005.0,2005.0,3005.0,0.01,NULL,NULL,NULL);
INSERT INTO "runs" VALUES('toy-73e3f818c127','toy','{"crash": false, "fail": false, "log": null, "model": "@RUNS_DIR@/toy-make-f84a282cabd9", "out": "@RUNS_DIR@/toy-73e3f818c127", "progress": false, "seed": 3, "sleep": 0.0, "x": 1.0}','{"crash": false, "fail": false, "log": null, "model": {"@run": "toy-make-f84a282cabd9"}, "seed": 3, "sleep": 0.0, "x": 1.0}','["toy-make-f84a282cabd9"]','done',NULL,NULL,'{"offset": 0.25, "score": 1.28}',1,1001.0,2001.0,3001.0,0.01,NULL,NULL,NULL);
INSERT INTO "runs" VALUES('toy-91866901b6af','toy','{"crash": false, "fail": false, "log": null, "model": "@RUNS_DIR@/toy-make-f84a282cabd9", "out": "@RUNS_DIR@/toy-91866901b6af", "progress": false, "seed": 3, "sleep": 0.0, "x": 2.0}','{"crash": false, "fail": false, "log": null, "model": {"@run": "toy-make-f84a282cabd9"}, "seed": 3, "sleep": 0.0, "x": 2.0}','["toy-make-f84a282cabd9"]','done',NULL,NULL,'{"offset": 0.25, "score": 4.28}',1,1002.0,2002.0,3002.0,0.01,NULL,NULL,NULL);
INSERT INTO "runs" VALUES('toy-c5c6a9a16fa8','toy','{"crash": false, "fail": true, "log": null, "model": "@RUNS_DIR@/toy-make-f84a282cabd9", "out": "@RUNS_DIR@/toy-c5c6a9a16fa8", "progress": false, "seed": 0, "sleep": 0.0, "x": 5.0}','{"crash": false, "fail": true, "log": null, "model": {"@run": "toy-make-f84a282cabd9"}, "seed": 0, "sleep": 0.0, "x": 5.0}','["toy-make-f84a282cabd9"]','failed','toy failure for x=5.0',NULL,NULL,1,1004.0,2004.0,3004.0,0.01,NULL,NULL,NULL);
CREATE TABLE sweep_runs (
    sweep TEXT NOT NULL, run_id TEXT NOT NULL REFERENCES runs(id), experiment TEXT NOT NULL,
    axes TEXT NOT NULL, label TEXT, position INTEGER NOT NULL,
    PRIMARY KEY (sweep, experiment, run_id)
);
INSERT INTO "sweep_runs" VALUES('legacy','toy-3061740c3043','main','{"model": "default", "seed": 3, "x": 1}',NULL,0);
INSERT INTO "sweep_runs" VALUES('legacy','toy-a672f388ff0f','main','{"model": "default", "seed": 3, "x": 2}',NULL,1);
INSERT INTO "sweep_runs" VALUES('legacy','toy-make-f84a282cabd9','main','null','made',2);
INSERT INTO "sweep_runs" VALUES('legacy','toy-73e3f818c127','main','{"model": "made", "seed": 3, "x": 1}',NULL,3);
INSERT INTO "sweep_runs" VALUES('legacy','toy-91866901b6af','main','{"model": "made", "seed": 3, "x": 2}',NULL,4);
INSERT INTO "sweep_runs" VALUES('legacy','toy-make-f84a282cabd9','failing','null','made',5);
INSERT INTO "sweep_runs" VALUES('legacy','toy-c5c6a9a16fa8','failing','{"fail": true, "model": "made", "x": 5}',NULL,6);
CREATE TABLE sweeps (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, spec_path TEXT, created REAL NOT NULL, updated REAL NOT NULL
);
INSERT INTO "sweeps" VALUES('legacy','{"command": "toy", "experiments": [{"grid": {"model": [null, {"label": "made", "toy-make": {"cached": true, "offset": 0.25}}], "seed": [3], "x": [1, 2]}, "name": "main"}, {"grid": {"fail": [true], "model": [{"label": "made", "toy-make": {"cached": true, "offset": 0.25}}], "x": [5]}, "name": "failing"}], "name": "legacy", "plugins": ["../sweep_toy.py"]}','legacy.yaml',1000.0,1000.0);
CREATE INDEX runs_status ON runs(status);
COMMIT;
