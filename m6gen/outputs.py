"""Recommendation lists on disk (JSONL or CSV): appended batch by batch, resumed after a kill, with
the options that decided them recorded beside the file, so a rerun never mixes two settings."""

from __future__ import annotations

import collections
import csv
import io
import json
from contextlib import contextmanager
from pathlib import Path

from m6gen.files import write_atomic

# ``filled`` repeats the user's list's own flag on each of its rows: "false" when fewer than k items could
# be recommended, as the JSONL line's "filled" says
CSV_FIELDS = ["user_id", "rank", "item_id", "title", "score", "accuracy", "diversity", "novelty", "logprob", "filled"]
OLD_CSV_HEADER = ",".join(CSV_FIELDS[:-1])  # before 0.3 there was no filled column
FLAGS = ("true", "false")  # the CSV's filled column
RECORDED_SINCE = {"interactions"}  # settings an older record lacks: not compared with it


class UserListError(ValueError):
    """A malformed users file, or an output file that is not m6gen's (the message names the line)."""


def done_users(path: Path, k: int | None = None, fix: str = "use a new --output") -> list[str]:
    """Users already complete in an output file; trims a half-written tail so appends stay clean.

    JSONL: each complete line is one complete user. CSV: rows after the last newline are dropped;
    the last user's rows are dropped too (it is redone) when it has fewer than ``k`` rows (a list
    that could not be filled is redone the same), or, without ``k``, when the file was cut. Earlier
    users are kept whatever this run's users are. A file that is not m6gen's output raises
    :class:`UserListError` naming its line; the message ends with ``fix``.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return []
    data = path.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]  # drop a partial last line
    try:
        text = keep.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserListError(
            f"{path}: not UTF-8 text (byte {err.start}), not an m6gen recommendations file; {fix}"
        ) from None
    if path.suffix == ".csv":
        lines = text.splitlines()
        if lines and lines[0] == OLD_CSV_HEADER:
            raise UserListError(f"{path}:1: written by an m6gen before 0.3 (no filled column); {fix}")
        if lines and lines[0] != ",".join(CSV_FIELDS):
            raise UserListError(f"{path}:1: not an m6gen recommendations header ({','.join(CSV_FIELDS)}); {fix}")
        rows = []
        for n, row in enumerate(csv.reader(lines[1:]), 2):
            if len(row) != len(CSV_FIELDS) or not row[0] or not row[1].isdigit() or row[-1] not in FLAGS:
                raise UserListError(f"{path}:{n}: not an m6gen recommendations row; {fix}")
            rows.append(row)
        if rows:
            counts = collections.Counter(r[0] for r in rows)  # rows per user, in file order
            line = 2
            for i, count in enumerate(counts.values(), 1):  # a filled list has k rows; the last may be cut (below)
                _check_length(path, line, count, rows[line - 2][-1] == "true" and i < len(counts), k)
                line += count
            last = rows[-1][0]
            n_last = counts[last]
            if (n_last < k) if k is not None else keep != data:  # cut between its rows (or, without k, maybe)
                rows = rows[:-n_last]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([CSV_FIELDS, *rows])
        if buf.getvalue() != text:
            keep = buf.getvalue().encode("utf-8")
        users = list(dict.fromkeys(r[0] for r in rows))
    else:
        users = []
        for n, line in enumerate(text.splitlines(), 1):
            try:
                record = json.loads(line)
                users.append(record["user_id"])
                n_items = len(record.get("items") or [])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserListError(f"{path}:{n}: not an m6gen recommendations line; {fix}") from None
            _check_length(path, n, n_items, bool(record.get("filled")), k)
    if keep != data:
        write_atomic(path, keep)
    return users


def _check_length(path: Path, line: int, n_items: int, filled: bool, k: int | None) -> None:
    """A list longer than ``k``, or a filled one of another length, was written with another --k: a
    file resumed without its settings record would mix list lengths."""
    if k is not None and (n_items > k or (filled and n_items != k)):
        raise UserListError(
            f"{path}:{line}: a list of {n_items} items, written with another --k than this run's {k}; "
            "resume it with its own --k, or use a new --output"
        )


@contextmanager
def appending_alone(path: Path):
    """Hold an exclusive lock on ``path`` (created if missing) while the block runs, so that a second run
    writing the same output is refused instead of appending every user a second time. A file this
    call created and left empty is removed again. No lock where the system has no ``fcntl`` (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    existed = path.exists()
    with open(path, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserListError(
                f"{path}: another m6gen run is writing to it now; wait for it to finish, or choose another --output"
            ) from None
        try:
            yield
        finally:
            if not existed and path.exists() and path.stat().st_size == 0:
                path.unlink()


def interactions_fingerprint(dataset) -> str:
    """12 hex digits naming the data as read (every user's interactions and the catalog's titles), before
    any option shapes it (those are recorded on their own): what a list was made from, so a resume on
    changed data is refused."""
    import hashlib

    digest = hashlib.sha1()
    for user, events in dataset.interactions.items():
        digest.update(user.encode("utf-8") + b"\0" + events.items.tobytes() + events.times.tobytes())
    digest.update("\n".join(it.title for it in dataset.catalog).encode("utf-8"))
    return digest.hexdigest()[:12]


# The options that decide what a recommendation list holds: a file is resumed only with the same ones.
def settings_file(output: Path) -> Path:
    return output.with_name(output.name + ".m6gen.json")


def check_settings(output: Path, settings: dict, written: Path | None = None) -> str:
    """Refuse to append to an output file written with other ``settings`` (before anything is trimmed).

    Without this a rerun with, say, another ``--k`` appended lists of another length to the same
    file, or (JSONL) silently skipped every user as done. ``written``: the file this process
    appends to (a shard of ``output`` under ``accelerate launch``). Returns "same" (recorded and
    equal), "new" (nothing written yet) or "unrecorded" (rows from before settings were recorded).
    """
    path = settings_file(output)
    written = written or output
    header = len(",".join(CSV_FIELDS)) + 1 if output.suffix == ".csv" else 0
    if not (written.is_file() and written.stat().st_size > header):
        return "new"
    if not path.is_file():
        return "unrecorded"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserListError(f"{path}: damaged settings record of {output}; delete it to append anyway") from None
    diffs = [
        _difference(k, old.get(k), v)
        for k, v in settings.items()
        if old.get(k) != v and not (k in RECORDED_SINCE and k not in old)  # a record from before the key: unknown
    ]
    if diffs:
        more = f" and {len(diffs) - 1} more" if len(diffs) > 1 else ""
        raise UserListError(
            f"{output}: written with other options ({diffs[0]}{more}); resume it with the same "
            f"options, or choose another --output"
        )
    return "same"


def _difference(key: str, there, now) -> str:
    if key == "interactions":
        return "the data's interactions or titles have changed since"
    return f"--{key.replace('_', '-')} {there!r} there, {now!r} now"


def record_settings(output: Path, settings: dict) -> None:
    path = settings_file(output)
    write_atomic(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")


def format_records(users: list[str], results, catalog, fmt: str) -> str:
    """One chunk of output text for a batch of users (written with a single append)."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        for user, res in zip(users, results):
            if not res.items:  # nothing to recommend (every item seen): one row says so, as JSONL's empty list
                writer.writerow({"user_id": user, "rank": 0, "filled": FLAGS[1]})
            for r in res.items:
                writer.writerow(
                    {
                        "user_id": user,
                        "rank": r.rank,
                        "item_id": catalog[r.item_id].item_id,
                        "title": catalog[r.item_id].title,
                        **_scores(r),
                        "filled": FLAGS[0] if res.filled else FLAGS[1],
                    }
                )
        return buf.getvalue()
    lines = []
    for user, res in zip(users, results):
        items = [
            {"rank": r.rank, "item_id": catalog[r.item_id].item_id, "title": catalog[r.item_id].title, **_scores(r)}
            for r in res.items
        ]
        lines.append(json.dumps({"user_id": user, "items": items, "filled": res.filled}, ensure_ascii=False) + "\n")
    return "".join(lines)


def _scores(r) -> dict:
    return {k: round(float(getattr(r, k)), 6) for k in ("score", "accuracy", "diversity", "novelty", "logprob")}


def merge_shards(output: Path, shards: list[Path]) -> None:
    """Concatenate shard files into ``output`` (atomically), keeping one header for CSV."""
    parts = []
    for i, shard in enumerate(shards):
        lines = shard.read_text(encoding="utf-8").splitlines(keepends=True)
        parts.extend(lines[1:] if output.suffix == ".csv" and i > 0 else lines)
    write_atomic(output, "".join(parts))
    for shard in shards:
        shard.unlink()
