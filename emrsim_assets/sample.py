"""Write a realistic legacy EMRsim-chat SQLite database, deterministically from a seed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from emrsim_assets.errors import SourceError
from emrsim_assets.source import quote_name

# The schema as the Node/SQLite app of that era declared it: integer AUTOINCREMENT ids, text
# timestamps, JSON in text columns, 0/1 booleans, foreign keys declared but not enforced.
LEGACY_SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'student',
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE patients (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    date_of_birth TEXT,
    sex TEXT,
    scenario TEXT,
    created_by INTEGER REFERENCES users(id),
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    patient_id INTEGER REFERENCES patients(id),
    status TEXT NOT NULL DEFAULT 'active',
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    sender TEXT NOT NULL,
    message TEXT NOT NULL,
    metadata TEXT,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_messages_conversation ON messages(conversation_id);
CREATE TABLE patient_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
    record_type TEXT NOT NULL,
    data TEXT NOT NULL,
    is_abnormal INTEGER NOT NULL DEFAULT 0,
    recorded_at TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE user_sessions (
    token TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    data TEXT,
    expires_at INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    is_revoked INTEGER NOT NULL DEFAULT 0
);
"""

# Two years and a month of history: every month from January 2023 to January 2025.
HISTORY_START = datetime(2023, 1, 1, tzinfo=UTC)
HISTORY_END = datetime(2025, 2, 1, tzinfo=UTC)

_PHRASES = [
    "The patient presents with chest pain radiating to the left arm.",
    "Vital signs: BP 142/91, HR 104, RR 22, SpO2 94% on room air.",
    "Can you describe when the symptoms started?",
    "I would order a 12-lead ECG and troponin levels.",
    "Patient reports céphalée and photophobia since this morning.",
    "患者は昨夜から胸痛を訴えています。",
    "Le patient a une fièvre de 38,9 °C depuis deux jours.",
    "🩺 Auscultation reveals bilateral crackles at the bases.",
    "Consider differential: ACS, PE, aortic dissection, pericarditis.",
    "What medications is the patient currently taking?",
    "Metformin 500 mg BID, lisinopril 10 mg daily, atorvastatin 40 mg.",
    "Allergies: penicillin (rash), no known food allergies.",
    "Good thinking. What would you do next? 👍",
    "The chest X-ray shows no pneumothorax; mild cardiomegaly.",
    "Paciente refiere disnea de esfuerzo y edema en miembros inferiores.",
    'Explain the "door-to-balloon" target to the family, in plain words.',
    "Lab results:\n- Na 134\n- K 5.6\n- Creatinine 1.9",
    "환자는 복통과 구토를 호소합니다.",
    "Repeat the assessment in 15 minutes, please.",
    "Great job summarising the SBAR handover, Dr. Müller.",
]
_SENDERS = ["user", "assistant", "system"]
_ROLES = ["student", "student", "student", "instructor", "admin"]
_FIRST = ["Ana", "Björn", "Chloé", "Dmitri", "Eun-ji", "Farah", "Giulia", "Hiro", "Ines", "José"]
_LAST = ["Smith", "Okafor", "Nguyễn", "García", "Kowalski", "Tanaka", "Dubois", "Øster", "Li"]
_RECORD_TYPES = ["vitals", "lab", "imaging", "medication", "note"]
_STATUSES = ["active", "active", "completed", "archived"]
_SCENARIOS = ["STEMI in the ED", "Pediatric asthma", "Sepsis on the ward", "DKA", "Stroke code"]


@dataclass(frozen=True)
class SampleSizes:
    messages: int
    conversations: int
    users: int
    patients: int
    patient_records: int
    user_sessions: int

    @classmethod
    def for_messages(cls, messages: int) -> SampleSizes:
        conversations = max(3, messages // 20)
        users = max(5, conversations // 8)
        patients = max(3, users // 2)
        return cls(
            messages=messages,
            conversations=conversations,
            users=users,
            patients=patients,
            patient_records=patients * 5,
            user_sessions=users * 3,
        )


def write_sample(
    path: Path, messages: int = 2_000, seed: int = 7, batch: int = 200_000
) -> SampleSizes:
    """Create `path` (it must not exist) holding a legacy EMRsim-chat database."""
    if path.exists():
        raise SourceError(f"{path} already exists; remove it or choose another --out.")
    if messages < 0:
        raise SourceError("--messages must be zero or more.")
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = SampleSizes.for_messages(messages)
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + LEGACY_SCHEMA)
        _insert(conn, "users", _users(rng, sizes))
        _insert(conn, "patients", _patients(rng, sizes))
        _insert(conn, "conversations", _conversations(rng, sizes))
        for frame in _messages(rng, sizes, batch):
            _insert(conn, "messages", frame)
        _insert(conn, "patient_records", _patient_records(rng, sizes))
        _insert(conn, "user_sessions", _user_sessions(rng, sizes))
        conn.commit()
        # The app ran in WAL mode; the migration must cope with that.
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    tmp.rename(path)
    return sizes


def _insert(conn: sqlite3.Connection, table: str, frame: pl.DataFrame) -> None:
    columns = ", ".join(quote_name(c) for c in frame.columns)
    marks = ", ".join("?" * frame.width)
    # Names through the one SQLite quoting helper, though they are this module's constants.
    insert = f"INSERT INTO {quote_name(table)} ({columns}) VALUES ({marks})"  # noqa: S608
    conn.executemany(insert, frame.iter_rows())


def _timestamps(rng: np.random.Generator, n: int, iso_share: float = 0.15) -> pl.Series:
    """CURRENT_TIMESTAMP text, with a share written by JavaScript's toISOString()."""
    start = int(HISTORY_START.timestamp() * 1000)
    end = int(HISTORY_END.timestamp() * 1000)
    millis = np.sort(rng.integers(start, end, size=n))
    iso = rng.random(n) < iso_share
    when = pl.Series(millis).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    frame = pl.DataFrame({"when": when, "iso": iso})
    return frame.select(
        pl.when(pl.col("iso"))
        .then(pl.col("when").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
        .otherwise(pl.col("when").dt.strftime("%Y-%m-%d %H:%M:%S"))
    ).to_series()


def _pick(rng: np.random.Generator, choices: list[str], n: int) -> pl.Series:
    return pl.Series(choices).gather(rng.integers(0, len(choices), size=n))


def _sometimes_null(rng: np.random.Generator, values: np.ndarray, share: float) -> pl.Series:
    missing = pl.Series(rng.random(len(values)) < share)
    return pl.select(pl.when(missing).then(None).otherwise(pl.Series(values))).to_series()


def _users(rng: np.random.Generator, sizes: SampleSizes) -> pl.DataFrame:
    n = sizes.users
    ids = pl.int_range(1, n + 1, eager=True)
    first = _pick(rng, _FIRST, n)
    last = _pick(rng, _LAST, n)
    created = _timestamps(rng, n, iso_share=0.0)
    return pl.DataFrame(
        {
            "id": ids,
            "first": first,
            "last": last,
            "role": _pick(rng, _ROLES, n),
            "is_active": (rng.random(n) < 0.9).astype(np.int64),
            "created_at": created,
        }
    ).select(
        "id",
        email=pl.format("user{}@emrsim.example", "id"),
        name=pl.format("{} {}", "first", "last"),
        password_hash=pl.format("$2b$10${}", pl.col("id").cast(pl.String).str.zfill(53)),
        role="role",
        is_active="is_active",
        created_at="created_at",
        updated_at="created_at",
    )


def _patients(rng: np.random.Generator, sizes: SampleSizes) -> pl.DataFrame:
    n = sizes.patients
    days = pl.Series(rng.integers(-30_000, -500, size=n))
    created_by = _sometimes_null(rng, rng.integers(1, sizes.users + 1, size=n), 0.1)
    return pl.DataFrame(
        {
            "id": pl.int_range(1, n + 1, eager=True),
            "first": _pick(rng, _FIRST, n),
            "last": _pick(rng, _LAST, n),
            "days": days,
            "sex": _pick(rng, ["F", "M", "X"], n),
            "scenario": _pick(rng, _SCENARIOS, n),
            "created_by": created_by,
            "created_at": _timestamps(rng, n),
        }
    ).select(
        "id",
        name=pl.format("{} {}", "first", "last"),
        date_of_birth=(pl.lit(datetime(2024, 1, 1).date()) + pl.duration(days="days")).dt.strftime(
            "%Y-%m-%d"
        ),
        sex="sex",
        scenario="scenario",
        created_by="created_by",
        created_at="created_at",
    )


def _conversations(rng: np.random.Generator, sizes: SampleSizes) -> pl.DataFrame:
    n = sizes.conversations
    # Free-form chats have no simulated patient.
    patient = _sometimes_null(rng, rng.integers(1, sizes.patients + 1, size=n), 0.25)
    created = _timestamps(rng, n)
    return pl.DataFrame(
        {
            "id": pl.int_range(1, n + 1, eager=True),
            "scenario": _pick(rng, _SCENARIOS, n),
            "user_id": rng.integers(1, sizes.users + 1, size=n),
            "patient_id": patient,
            "status": _pick(rng, _STATUSES, n),
            "created_at": created,
        }
    ).select(
        "id",
        title=pl.format("Case {}: {}", "id", "scenario"),
        user_id="user_id",
        patient_id="patient_id",
        status="status",
        created_at="created_at",
        updated_at="created_at",
    )


def _messages(rng: np.random.Generator, sizes: SampleSizes, batch: int) -> Iterator[pl.DataFrame]:
    # Timestamps are drawn per batch over the whole history, then sorted globally by slicing a
    # sorted stream of uniform draws: ids ascend with time, as AUTOINCREMENT did.
    n = sizes.messages
    start = int(HISTORY_START.timestamp() * 1000)
    span = int(HISTORY_END.timestamp() * 1000) - start
    done = 0
    while done < n:
        size = min(batch, n - done)
        lo, hi = done / n, (done + size) / n
        millis = start + (np.sort(rng.uniform(lo, hi, size=size)) * span).astype(np.int64)
        when = pl.Series(millis).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
        iso = pl.Series(rng.random(size) < 0.15)
        phrase_a = _pick(rng, _PHRASES, size)
        phrase_b = _pick(rng, _PHRASES, size)
        long_message = pl.Series(rng.random(size) < 0.4)
        tokens = pl.Series(rng.integers(5, 900, size=size))
        latency = pl.Series(rng.integers(80, 4000, size=size))
        has_meta = pl.Series(rng.random(size) < 0.7)
        frame = pl.DataFrame(
            {
                "id": pl.int_range(done + 1, done + size + 1, eager=True),
                "conversation_id": rng.integers(1, sizes.conversations + 1, size=size),
                "sender": _pick(rng, _SENDERS, size),
                "a": phrase_a,
                "b": phrase_b,
                "long": long_message,
                "tokens": tokens,
                "latency": latency,
                "has_meta": has_meta,
                "when": when,
                "iso": iso,
            }
        )
        yield frame.select(
            "id",
            "conversation_id",
            "sender",
            message=pl.when("long").then(pl.format("{} {}", "a", "b")).otherwise("a"),
            metadata=pl.when("has_meta").then(
                pl.concat_str(
                    pl.lit('{"model": "sim-gpt", "tokens": '),
                    "tokens",
                    pl.lit(', "latency_ms": '),
                    "latency",
                    pl.lit(', "flags": {"voice": '),
                    pl.col("long").cast(pl.String).str.to_lowercase(),
                    pl.lit("}}"),
                )
            ),
            created_at=pl.when("iso")
            .then(pl.col("when").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
            .otherwise(pl.col("when").dt.strftime("%Y-%m-%d %H:%M:%S")),
        )
        done += size


def _patient_records(rng: np.random.Generator, sizes: SampleSizes) -> pl.DataFrame:
    n = sizes.patient_records
    kind = _pick(rng, _RECORD_TYPES, n)
    value = pl.Series(rng.integers(40, 200, size=n))
    recorded = _timestamps(rng, n)
    return pl.DataFrame(
        {
            "id": pl.int_range(1, n + 1, eager=True),
            "patient_id": rng.integers(1, sizes.patients + 1, size=n),
            "record_type": kind,
            "value": value,
            "is_abnormal": (rng.random(n) < 0.2).astype(np.int64),
            "recorded_at": recorded,
            "created_at": recorded,
        }
    ).select(
        "id",
        "patient_id",
        "record_type",
        data=pl.concat_str(
            pl.lit('{"kind": "'),
            "record_type",
            pl.lit('", "value": '),
            "value",
            pl.lit(', "unit": "mmHg", "notes": "é"}'),
        ),
        is_abnormal="is_abnormal",
        recorded_at="recorded_at",
        created_at="created_at",
    )


def _user_sessions(rng: np.random.Generator, sizes: SampleSizes) -> pl.DataFrame:
    n = sizes.user_sessions
    token_bits = rng.integers(0, 2**62, size=(n, 2))
    created_ms = rng.integers(
        int(HISTORY_START.timestamp() * 1000), int(HISTORY_END.timestamp() * 1000), size=n
    )
    created = pl.Series(created_ms).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    has_data = pl.Series(rng.random(n) < 0.8)
    frame = pl.DataFrame(
        {
            "hi": token_bits[:, 0],
            "lo": token_bits[:, 1],
            "user_id": rng.integers(1, sizes.users + 1, size=n),
            "has_data": has_data,
            "expires_at": created_ms + 7 * 24 * 3600 * 1000,
            "created": created,
            "is_revoked": (rng.random(n) < 0.05).astype(np.int64),
        }
    )
    return frame.select(
        token=pl.format("{}{}", pl.col("hi").cast(pl.String), pl.col("lo").cast(pl.String)),
        user_id="user_id",
        data=pl.when("has_data").then(pl.lit('{"theme": "dark", "lang": "fr-CA"}')),
        expires_at="expires_at",
        created_at=pl.col("created").dt.strftime("%Y-%m-%d %H:%M:%S"),
        is_revoked="is_revoked",
    ).unique(subset="token", keep="first", maintain_order=True)
