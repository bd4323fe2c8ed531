"""Write a database shaped like the EMRsim-chat backend's current schema (better-sqlite3, WAL).

Text keys (nanoids), an undeclared reference from turns to sessions with orphans by design, a
persona_id that names a registry slug (no table), both timestamp forms the app writes, JSON in
text columns, and the unique fingerprint the app's de-duplication relies on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import polars as pl

from emrsim_assets.sample import HISTORY_END, HISTORY_START, _insert, _pick

APP_SCHEMA = """
CREATE TABLE IF NOT EXISTS personas (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    headline TEXT,
    age INTEGER,
    gender TEXT,
    backstory TEXT,
    tone TEXT,
    response_template TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    persona_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    started_at TEXT DEFAULT CURRENT_TIMESTAMP,
    ended_at TEXT,
    sps_session_id TEXT,
    sps_scenario_id TEXT,
    sps_phase TEXT,
    sps_gate_json TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    audio_ms INTEGER,
    tokens_in INTEGER,
    tokens_out INTEGER,
    timings_json TEXT,
    fingerprint TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_turns_fingerprint ON turns(fingerprint);
CREATE TABLE IF NOT EXISTS scenarios (
    scenario_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    region TEXT NOT NULL,
    difficulty TEXT,
    setting TEXT,
    tags_json TEXT DEFAULT '[]',
    scenario_json TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP
);
"""

_ALPHABET = np.frombuffer(
    b"useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict", np.uint8
)
_SLUGS = ["chest-pain-anxious", "copd-veteran", "peds-asthma-parent", "sepsis-elder"]
_MODES = ["voice", "text", "sps"]
_PHASES = ["intake", "history", "exam", "plan", None]
_TURN_ROLES = ["user", "assistant"]
_LINES = [
    "I've had this pressure in my chest since this morning.",
    "Can you describe the pain? Does it spread anywhere?",
    "It goes down my left arm, and I feel sweaty.",
    "Any history of heart problems in your family?",
    "My father had a heart attack at 55.",
]
_REGIONS = ["emergency", "ward", "clinic", "icu"]


def _nanoids(rng: np.random.Generator, n: int, size: int = 21) -> pl.Series:
    letters = _ALPHABET[rng.integers(0, len(_ALPHABET), size=(n, size))]
    return pl.Series([bytes(row).decode() for row in letters], dtype=pl.String)


def _uuids(rng: np.random.Generator, n: int) -> pl.Series:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    text = [bytes(row).hex() for row in raw]
    return pl.Series([f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in text])


def _stamps(rng: np.random.Generator, n: int) -> pl.Series:
    """Both forms the app writes: SQLite's CURRENT_TIMESTAMP and JavaScript's toISOString()."""
    start = int(HISTORY_START.timestamp() * 1000)
    end = int(HISTORY_END.timestamp() * 1000)
    when = pl.Series(np.sort(rng.integers(start, end, size=n))).cast(pl.Datetime("ms"))
    iso = pl.Series(rng.random(n) < 0.5)
    return pl.select(
        pl.when(iso)
        .then(when.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
        .otherwise(when.dt.strftime("%Y-%m-%d %H:%M:%S"))
    ).to_series()


def write_app_sample(path: Path, turns: int = 2_000, seed: int = 7) -> dict[str, int]:
    """Create `path` (it must not exist) shaped like the app's current database."""
    rng = np.random.default_rng(seed)
    sessions = max(3, turns // 40)
    scenarios = 6
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + APP_SCHEMA)
        _insert(
            conn,
            "personas",
            pl.DataFrame(
                {
                    "id": ["p_anxious", "p_stoic"],
                    "display_name": ["Mr. Alvarez", "Mrs. Øster"],
                    "headline": ["Anxious 58-year-old", None],
                    "age": [58, 71],
                    "gender": ["male", "female"],
                    "backstory": ["Retired bus driver.", None],
                    "tone": ["worried", "calm"],
                    "response_template": [None, "{{answer}}"],
                }
            ),
        )
        scenario_ids = pl.Series([f"scn-{i:03d}" for i in range(scenarios)])
        _insert(
            conn,
            "scenarios",
            pl.DataFrame(
                {
                    "scenario_id": scenario_ids,
                    "title": _pick(
                        rng, ["STEMI", "COPD flare", "Peds asthma", "Sepsis"], scenarios
                    ),
                    "region": _pick(rng, _REGIONS, scenarios),
                    "difficulty": _pick(rng, ["easy", "medium", "hard"], scenarios),
                    "setting": _pick(rng, ["ED", "ward", "clinic"], scenarios),
                    "tags_json": ['["cardio","acute"]', "[]", '["resp"]', "[]", '["peds"]', "[]"],
                    "scenario_json": [
                        f'{{"id": "scn-{i:03d}", "vitals": {{"hr": {80 + i}, "spo2": 96}}}}'
                        for i in range(scenarios)
                    ],
                    "created_at": _stamps(rng, scenarios),
                    "updated_at": _stamps(rng, scenarios),
                }
            ),
        )
        session_ids = _nanoids(rng, sessions)
        started = _stamps(rng, sessions)
        ended = rng.random(sessions) < 0.8
        _insert(
            conn,
            "sessions",
            pl.DataFrame(
                {
                    "id": session_ids,
                    "persona_id": _pick(rng, _SLUGS, sessions),
                    "mode": _pick(rng, _MODES, sessions),
                    "started_at": started,
                    "ended_at": pl.select(pl.when(pl.Series(ended)).then(started)).to_series(),
                    "sps_session_id": _uuids(rng, sessions),
                    "sps_scenario_id": scenario_ids.gather(rng.integers(0, scenarios, sessions)),
                    "sps_phase": pl.Series(
                        [_PHASES[i] for i in rng.integers(0, len(_PHASES), sessions)]
                    ),
                    "sps_gate_json": pl.Series(
                        [
                            f'{{"gate": "g{i % 3}", "passed": {"true" if i % 2 else "false"}}}'
                            for i in range(sessions)
                        ]
                    ),
                }
            ),
        )
        # Turns of sessions that are not in the table: the app writes them by design (a session
        # row is written when the session ends, and some never end).
        missing = _nanoids(rng, max(1, sessions // 10))
        owners = pl.concat([session_ids, missing])
        owner = rng.integers(0, len(owners), size=turns)
        tokens = rng.integers(3, 700, size=turns)
        frame = pl.DataFrame(
            {
                "id": _nanoids(rng, turns),
                "session_id": owners.gather(owner),
                "role": _pick(rng, _TURN_ROLES, turns),
                "text": _pick(rng, _LINES, turns),
                "created_at": _stamps(rng, turns),
                "audio_ms": pl.Series(rng.integers(200, 9000, turns)).set(
                    pl.Series(rng.random(turns) < 0.5), None
                ),
                "tokens_in": tokens,
                "tokens_out": tokens // 2 + 1,
                "timings_json": pl.Series(
                    [f'{{"asr_ms": {t % 400}, "llm_ms": {t * 3}}}' for t in tokens]
                ),
                "fingerprint": _uuids(rng, turns).str.replace_all("-", ""),
            }
        )
        _insert(conn, "turns", frame)
        conn.commit()
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    tmp.rename(path)
    return {"personas": 2, "scenarios": scenarios, "sessions": sessions, "turns": turns}
