"""Fuzzing the log shapes: adversarial rows in a MovieLens-"latest" ratings.csv,
in MovieLens-100K's header-less tab-separated u.data, in an Amazon-reviews
JSONL log, and in their catalogues (multi-valued genres, nested category lists).

As in test_fuzz_ingestion, every bad row is made with the reason it must be
dead-lettered for and mixed with good rows; each layout is ingested once,
through the Beam graph. The tests check the exact dead letters and report
counts, the examples and labels of every good row, that re-sent rows are
duplicates, and that nothing bad becomes an example or reaches a user's text.
"""

import collections
import dataclasses
import datetime
import json
import os
import random
from typing import Dict, List, Optional, Tuple

import pytest

from components import interaction_logs as logs
from components.log_config import LogConfig
from datagen import movielens
from tests.test_log_example_gen import _value, ingest
from tests.test_log_shapes import AMAZON_REVIEWS, RATINGS_LATEST
from trainer import features as F

T0 = 1_700_000_000
MAX_TIMESTAMP = 2_000_000_000
HALF_STARS = [x / 2 for x in range(1, 11)]
ML_HEADER = "userId,movieId,rating,timestamp"
_ABSENT = object()  # a JSON field left out of the row


@dataclasses.dataclass(frozen=True)
class Good:
    """A good row and what its example must hold."""

    line: bytes
    user: str
    item: str
    timestamp: int
    rating: float
    event_id: str  # the row's derived id
    review: Optional[str] = None  # as it must appear in later user text
    token: Optional[str] = None  # a marker unique to this row's review


@dataclasses.dataclass
class Run:
    config: LogConfig
    good: List[Good]
    resent: List[Good]
    bad: List[Tuple[bytes, str]]  # event and catalogue rows, with the expected reason
    items: Dict[str, Tuple[str, str]]  # the good catalogue: id -> (title, category)
    examples: list
    report: Dict[str, int]
    dead: List[dict]


def _write(path, lines: List[bytes]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")


def _ingest(base, tmp_path_factory, config, good, resent, bad, items) -> Run:
    examples, report, dead = ingest(
        base, config, tmp_path_factory.mktemp("out"), max_timestamp=MAX_TIMESTAMP
    )
    every = examples["train"] + examples["eval"]
    return Run(config, good, resent, bad, items, every, report, dead)


def _csv_good(line: str, header, delimiter=",", **fields) -> Good:
    record = logs.decode_csv(line.rstrip("\r"), header, delimiter=delimiter)
    return Good(line.encode(), event_id=logs.derived_event_id(record), **fields)


NOT_UTF8 = [b"\xff", b"\xe9", b"\xe2\x82", b"\xc3\x28", b"\xed\xa0\x80"]  # latin-1, cut, surrogate


def _corrupt(line: bytes, rng: random.Random) -> bytes:
    """The line with bytes that are not UTF-8 at a random place."""
    at = rng.randrange(len(line))
    return line[:at] + rng.choice(NOT_UTF8) + line[at:]


# --- MovieLens "latest": ratings.csv and movies.csv ---------------------------

ML_GENRES = [
    ("Drama|Romance", "Drama"),
    ("Comedy", "Comedy"),
    ("(no genres listed)", "(no genres listed)"),
    (" Sci-Fi | Action |Sci-Fi", "Sci-Fi"),
    ("||Horror|", "Horror"),
    ("|".join(f"G{k}" for k in range(1_000)), "G0"),  # a huge list: its first value
]
ML_BAD_MOVIES = [
    (b"b0,Broken 0,", "item_missing_category"),
    (b"b1,Broken 1,|", "item_missing_category"),
    (b"b2,Broken 2, | | ", "item_missing_category"),
    (b"b3,,Drama", "item_missing_title"),
    (b",No id,Drama", "item_missing_item_id"),
    (b"b5,Two columns", "item_unparseable"),
    (b"b6,Am\xe9lie,Drama", "item_invalid_utf8"),
    (b"b7,Long genre," + b"X" * 10_001, "item_bad_category"),
    (b"b8," + b"T" * 10_001 + b",Drama", "item_bad_title"),
    (b'b9,"Unclosed,Drama', "item_unparseable"),
    (b"b10,Four,Drama,Extra", "item_unparseable"),
]
# The ids of movies whose catalogue row is bad: their ratings are unknown items.
ML_BAD_IDS = ["b0", "b1", "b2", "b3", "b5", "b6", "b7", "b8", "b9", "b10"]
OFF_GRID = ["0.25", "5.5", "", "NaN", "nan", "inf", "-inf", "0", "-0.5", "5.01", "  ",
            "four", '"4,5"', "1e400", "0x4"]  # fmt: skip


def _ml_movies() -> Tuple[List[bytes], Dict[str, Tuple[str, str]]]:
    lines, items = [b"movieId,title,genres"], {}
    for i in range(60):
        genres, category = ML_GENRES[i % len(ML_GENRES)]
        title = f"Movie {i}, The (19{i + 40})" if i % 7 == 0 else f"Movie {i} (19{i + 40})"
        field = f'"{title}"' if "," in title else title
        lines.append(f"m{i},{field},{genres}".encode())
        items[f"m{i}"] = (title, category)
    return lines + [line for line, _ in ML_BAD_MOVIES], items


def _ml_good_line(rng: random.Random, user: str, movie: str, rating: float, ts: int) -> Good:
    fields = dict(user=user, item=movie, timestamp=ts, rating=rating)
    header = ML_HEADER.split(",")
    kind = rng.randrange(10)
    if kind == 0:  # every field quoted
        return _csv_good(f'"{user}","{movie}","{rating:g}","{ts}"', header, **fields)
    if kind == 1:  # a Windows line end
        return _csv_good(f"{user},{movie},{rating:g},{ts}\r", header, **fields)
    if kind == 2:  # spaces around the values
        return _csv_good(f" {user} , {movie} , {rating:g} , {ts} ", header, **fields)
    if kind == 3:  # an ISO-8601 time
        iso = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
        return _csv_good(f"{user},{movie},{rating:g},{iso:%Y-%m-%dT%H:%M:%SZ}", header, **fields)
    if kind == 4:  # a fractional time, an exponent rating
        return _csv_good(f"{user},{movie},{rating}e0,{ts}.75", header, **fields)
    return _csv_good(f"{user},{movie},{rating:g},{ts}", header, **fields)


def _ml_bad(rng: random.Random, n: int, movies: List[str]) -> Tuple[bytes, str]:
    user, movie = f"u{rng.randrange(40)}", rng.choice(movies)
    rating, ts = f"{rng.choice(HALF_STARS):g}", str(T0 + rng.randrange(10**7))

    def row(*fields):
        return ",".join(fields).encode()

    kind = n % 13
    if kind == 0:
        return row(user, movie, rng.choice(OFF_GRID), ts), "bad_rating"
    if kind == 1:  # a decimal comma, unquoted: one column too many
        return row(user, movie, "4", "5", ts), "unparseable"
    if kind == 2:
        return row(rng.choice(["", "  "]), movie, rating, ts), "missing_user_id"
    if kind == 3:
        return row(user, rng.choice(["", " "]), rating, ts), "missing_item_id"
    if kind == 4:
        return row(user, movie, rating, ""), "missing_timestamp"
    if kind == 5:
        unknown = rng.choice(["m999", "M1", "1", 'm"1', *ML_BAD_IDS])
        return row(user, unknown, rating, ts), "unknown_item"
    if kind == 6:  # the wrong number of columns
        fields = [user, movie, rating, ts]
        width = rng.choice([1, 2, 3, 5, 6])
        return row(*(fields * 2)[:width]), "unparseable"
    if kind == 7:  # quotes (or a line break) that break CSV
        return rng.choice(
            [f'{user},"{movie},{rating},{ts}', f'"{user}"x,{movie},{rating},{ts}',
             f'",{rating},{ts}', f"{user},{movie}\r,{rating},{ts}"]
        ).encode(), "unparseable"  # fmt: skip
    if kind == 8:
        return _corrupt(row(user, movie, rating, ts), rng), "invalid_utf8"
    if kind == 9:
        bad = rng.choice(["soon", "NaN", "inf", "2023-13-45", "17e", "  "])
        return row(user, movie, rating, bad), "bad_timestamp"
    if kind == 10:
        bad = rng.choice([f"{ts}000", "-1", "0", "631151999", str(MAX_TIMESTAMP + 1)])
        return row(user, movie, rating, bad), "timestamp_out_of_range"
    if kind == 11:  # a header line, where files were concatenated
        return ML_HEADER.encode(), "bad_timestamp"
    return b",,,", "missing_user_id"


@pytest.fixture(scope="module")
def latest(tmp_path_factory):
    rng = random.Random(20261201)
    base = tmp_path_factory.mktemp("ml-latest")
    movie_lines, items = _ml_movies()
    _write(str(base / "movies.csv"), movie_lines)
    good = []
    for u in range(40):
        for movie in rng.sample(sorted(items), rng.randrange(4, 20)):
            ts = T0 + rng.randrange(10**7)
            good.append(_ml_good_line(rng, f"u{u}", movie, rng.choice(HALF_STARS), ts))
    resent = rng.sample(good, 40)
    # Re-sent as they were, or with the other line end: the same fields, the same id.
    resent_lines = [
        g.line[:-1] if g.line.endswith(b"\r") else g.line + (b"\r" if n % 2 else b"")
        for n, g in enumerate(resent)
    ]
    bad = [_ml_bad(rng, n, sorted(items)) for n in range(650)]
    bad += [(f"u1,{movie},4,{T0}".encode(), "unknown_item") for movie in ML_BAD_IDS]
    lines = [g.line for g in good] + resent_lines + [line for line, _ in bad]
    rng.shuffle(lines)
    _write(str(base / "ratings.csv"), [ML_HEADER.encode()] + lines)
    config = dataclasses.replace(RATINGS_LATEST, max_bad_fraction=1.0)
    return _ingest(base, tmp_path_factory, config, good, resent, bad + ML_BAD_MOVIES, items)


# --- MovieLens-100K: header-less, tab-separated u.data -------------------------

ML100K_COLUMNS = tuple(movielens.LOG_CONFIG["csv_columns"]["events"])
ML100K_HEADERS = ["user_id\titem_id\trating\ttimestamp", "userId\tmovieId\trating\ttimestamp",
                  "user id\titem id\trating\ttimestamp"]  # fmt: skip


def _ml100k_source(source, rng: random.Random) -> Dict[str, str]:
    """MovieLens-100K's files (40 movies, 30 users); returns the users' expected profiles."""
    os.makedirs(source)
    (source / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\nDrama|3\n\n")
    movies = []
    for i in range(1, 41):
        flags = "|".join(rng.choice("01") for _ in range(4))
        movies.append(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|{flags}")
    (source / "u.item").write_text("\n".join(movies) + "\n")
    users, profiles = [], {}
    for u in range(1, 31):
        age, gender, job = 18 + u, "MF"[u % 2], rng.choice(["technician", "other", "writer"])
        users.append(f"{u}|{age}|{gender}|{job}|8571{u}")
        profiles[str(u)] = f"age {age} gender {gender} occupation {job}"
    (source / "u.user").write_text("\n".join(users) + "\n")
    (source / "u.data").write_text(f"1\t1\t5\t{T0}\n")
    return profiles


def _ml100k_good(rng: random.Random, user: str, item: str, rating: int, ts: int) -> Good:
    fields = dict(user=user, item=item, timestamp=ts, rating=float(rating))
    line = rng.choice(
        [f"{user}\t{item}\t{rating}\t{ts}\r", f'"{user}"\t"{item}"\t"{rating}"\t"{ts}"',
         f"{user}\t{item}\t{rating}\t{ts} "] + [f"{user}\t{item}\t{rating}\t{ts}"] * 5
    )  # fmt: skip
    return _csv_good(line, ML100K_COLUMNS, "\t", **fields)


def _ml100k_bad(rng: random.Random, n: int) -> Tuple[bytes, str]:
    fields = [str(rng.randrange(1, 31)), str(rng.randrange(1, 41)), str(rng.randrange(1, 6))]
    fields.append(str(T0 + rng.randrange(10**7)))
    kind = n % 11
    if kind == 0:  # too few tabs
        return "\t".join(fields[: rng.randrange(1, 4)]).encode(), "unparseable"
    if kind == 1:  # too many tabs
        extra = rng.choice([fields + [""], fields + ["x"], fields[:2] + [""] + fields[2:]])
        return "\t".join(extra).encode(), "unparseable"
    if kind == 2:
        return rng.choice(ML100K_HEADERS).encode(), "bad_timestamp"
    if kind == 3:
        fields[2] = rng.choice(["0", "6", "", "-1", "10", "0.5", "5.5"])
        return "\t".join(fields).encode(), "bad_rating"
    if kind == 4:  # another separator
        return rng.choice([",", " ", "|", ";"]).join(fields).encode(), "unparseable"
    if kind == 5:
        fields[1] = rng.choice(["9999", "0", "41", "01"])
        return "\t".join(fields).encode(), "unknown_item"
    if kind == 6:
        return _corrupt("\t".join(fields).encode(), rng), "invalid_utf8"
    if kind == 7:  # milliseconds
        fields[3] += "000"
        return "\t".join(fields).encode(), "timestamp_out_of_range"
    if kind == 8:
        fields[0] = ""
        return "\t".join(fields).encode(), "missing_user_id"
    if kind == 9:
        fields[1] = ""
        return "\t".join(fields).encode(), "missing_item_id"
    fields[3] = ""
    return "\t".join(fields).encode(), "missing_timestamp"


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    rng = random.Random(20261202)
    root = tmp_path_factory.mktemp("ml-100k")
    profiles = _ml100k_source(root / "source", rng)
    movielens.convert(str(root / "source"), str(root / "ml"))
    with open(root / "ml" / "items.jsonl") as f:
        items = {i["item_id"]: (i["title"], i["category"]) for i in map(json.loads, f)}
    good = []
    for u in range(1, 33):  # users 31 and 32 are not in u.user: no profile
        for item in rng.sample(sorted(items), rng.randrange(3, 15)):
            ts = T0 + rng.randrange(10**7)
            good.append(_ml100k_good(rng, str(u), item, rng.randrange(1, 6), ts))
    resent = rng.sample(good, 30)
    bad = [_ml100k_bad(rng, n) for n in range(550)]
    lines = [g.line for g in good + resent] + [line for line, _ in bad]
    rng.shuffle(lines)
    header = ML100K_HEADERS[0].encode()  # exported with a header, by mistake
    _write(str(root / "ml" / "events" / "u.data"), [header] + lines)
    with open(root / "ml" / "log_config.json") as f:
        config = LogConfig.from_dict({**json.load(f), "max_bad_fraction": 1.0})
    bad = [(header, "bad_timestamp")] + bad
    run = _ingest(root / "ml", tmp_path_factory, config, good, resent, bad, items)
    return run, profiles


# --- Amazon reviews: JSONL with review text, nested category lists ------------

AMAZON_GOOD_CATEGORIES = [
    ([["Sports & Outdoors", "Dance"]], "Sports & Outdoors"),
    ([["", "Toys"], ["Toys", "Dolls"]], "Toys"),
    ([[" "], [None, "Books"]], "Books"),
    ("Books", "Books"),
    ([3, "Misc"], "3"),
    ([["Clothing\x07Shoes"]], "Clothing Shoes"),  # a control character, made a space
    ([[f"C{k}" for k in range(5_000)]], "C0"),  # a huge list: its first value
]
AMAZON_BAD_ITEMS = [
    ({"categories": [[]]}, "item_missing_category"),
    ({"categories": [None]}, "item_missing_category"),
    ({"categories": []}, "item_missing_category"),
    ({"categories": [[None, ""], [" "]]}, "item_missing_category"),
    ({"categories": [{"a": 1}, True]}, "item_missing_category"),
    ({"categories": None}, "item_missing_category"),
    ({"categories": _ABSENT}, "item_missing_category"),
    ({"categories": {"a": 1}}, "item_bad_category"),
    ({"categories": 3.5}, "item_bad_category"),
    ({"categories": True}, "item_bad_category"),
    ({"categories": [["x" * 10_001]]}, "item_bad_category"),
    ({"title": _ABSENT}, "item_missing_title"),
    ({"title": ["Tutu"]}, "item_bad_title"),
]
AMAZON_BAD_ITEM_LINES = [  # ids X13, X14: unparseable rows
    (b'{"asin": "X13", "title": "Tutu", "categories": [["Toys"]', "item_unparseable"),
    (b'{"asin": "X14", "title": "Tu\xfftu", "categories": [["Toys"]]}', "item_invalid_utf8"),
]
AMAZON_BAD_IDS = [f"X{i}" for i in range(len(AMAZON_BAD_ITEMS) + 2)]


def _amazon_catalogue() -> Tuple[List[bytes], List[Tuple[bytes, str]], Dict]:
    lines, items = [], {}
    for i in range(80):
        categories, category = AMAZON_GOOD_CATEGORIES[i % len(AMAZON_GOOD_CATEGORIES)]
        if i >= len(AMAZON_GOOD_CATEGORIES) and category == "C0":
            categories, category = [["Dance"]], "Dance"  # one huge list is enough
        row = {"asin": f"B{i}", "title": f"Tutu {i}", "description": "ballet",
               "categories": categories, "salesRank": {"Toys": i}}  # fmt: skip
        lines.append(json.dumps(row).encode())
        items[f"B{i}"] = (f"Tutu {i}", category)
    bad = []
    for i, (change, reason) in enumerate(AMAZON_BAD_ITEMS):
        row = {"asin": f"X{i}", "title": "Tutu", "categories": [["Toys"]], **change}
        row = {k: v for k, v in row.items() if v is not _ABSENT}
        bad.append((json.dumps(row).encode(), reason))
    return lines, bad + AMAZON_BAD_ITEM_LINES, items


def _clean(text: str) -> Optional[str]:
    """Review text as the user's text must show it: stripped, control characters spaces."""
    text = "".join(c if ord(c) >= 32 or c == "\t" else " " for c in text.strip())
    return text or None


def _amazon_row(user, item, rating, ts, review=_ABSENT) -> dict:
    row = {"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": ts,
           "helpful": [1, 2], "summary": "ok", "reviewTime": "11 14, 2023"}  # fmt: skip
    if review is not _ABSENT:
        row["reviewText"] = review
    return row


def _amazon_review(rng: random.Random, n: int, heavy: bool):
    """(reviewText or _ABSENT, the text later user text shows, its token)."""
    token = f"<r{n}>"
    if heavy:  # long reviews, up to the 10,000-character limit
        text = token + " " + "w" * rng.choice([8_990, 10_000 - len(token) - 1])
        return text, text, token
    kind = n % 10
    if kind == 0:  # control characters: allowed, made spaces
        text = f"\x00{token}\x1b[1m loud\x07\nnext line\x7f \x1f"
        return text, _clean(text), token
    if kind == 1:  # a number: taken as text
        return 42, "42", None
    if kind in (2, 3, 4, 5):  # no review
        return [None, "", float("nan"), _ABSENT][kind - 2], None, None
    if kind == 6:
        return f"  {token}\tpadded  \n", f"{token}\tpadded", token  # a tab is kept
    if kind == 7:
        text = f"{token} 非常好 🎉 " + "z" * 400
        return text, text, token
    return f"{token} plain review {n}", f"{token} plain review {n}", token


def _amazon_bad(rng: random.Random, n: int, users: List[str], items: List[str]):
    row = _amazon_row(rng.choice(users), rng.choice(items), rng.randrange(1, 6),
                      T0 + 86_400 * rng.randrange(60), f"<x{n}> a bad row's review")  # fmt: skip
    kind = n % 16
    if kind == 0:
        row["reviewText"] = rng.choice([[f"<x{n}>"], [[f"<x{n}>"]], []])
        return json.dumps(row).encode(), "bad_review_text"
    if kind == 1:
        row["reviewText"] = rng.choice([{"text": f"<x{n}>"}, {}])
        return json.dumps(row).encode(), "bad_review_text"
    if kind == 2:
        row["reviewText"] = rng.choice([4.5, True, False, float("inf")])
        return json.dumps(row).encode(), "bad_review_text"
    if kind == 3:  # over 10,000 characters
        row["reviewText"] = f"<x{n}> " + "y" * rng.randrange(10_001, 30_000)
        return json.dumps(row).encode(), "bad_review_text"
    if kind == 4:
        rating = rng.choice([0, 6, -1, 5.5, "five", None, [5], True, "NaN", _ABSENT])
        row["overall"] = rating
        row = {k: v for k, v in row.items() if v is not _ABSENT}
        return json.dumps(row).encode(), "bad_rating"
    if kind == 5:
        row["reviewerID"] = rng.choice(["", "  ", None])
        return json.dumps(row).encode(), "missing_user_id"
    if kind == 6:
        row["reviewerID"] = rng.choice([["A1"], {"id": "A1"}, 1.5, True])
        return json.dumps(row).encode(), "bad_user_id"
    if kind == 7:
        row["asin"] = rng.choice(["B999", "b1", *AMAZON_BAD_IDS])
        return json.dumps(row).encode(), "unknown_item"
    if kind == 8:
        del row["asin"]
        return json.dumps(row).encode(), "missing_item_id"
    if kind == 9:
        row["unixReviewTime"] = ""
        if n % 2:
            del row["unixReviewTime"]
        return json.dumps(row).encode(), "missing_timestamp"
    if kind == 10:
        row["unixReviewTime"] = rng.choice(["soon", True, [T0], {"t": T0}, "NaN"])
        return json.dumps(row).encode(), "bad_timestamp"
    if kind == 11:  # milliseconds
        row["unixReviewTime"] *= 1000
        return json.dumps(row).encode(), "timestamp_out_of_range"
    if kind == 12:
        text = json.dumps(row)
        return text[: rng.randrange(1, len(text) - 1)].encode(), "unparseable"
    if kind == 13:  # a raw control character in a JSON string
        char = rng.choice(["\x01", "\r", "\x1b", "\t"])
        return json.dumps(row).replace("<x", char + "<x").encode(), "unparseable"
    if kind == 14:
        return json.dumps(row).encode().replace(b"<x", b"\xff<x"), "invalid_utf8"
    return json.dumps([row]).encode(), "unparseable"


@pytest.fixture(scope="module")
def amazon(tmp_path_factory):
    rng = random.Random(20261203)
    base = tmp_path_factory.mktemp("amazon")
    item_lines, bad_items, items = _amazon_catalogue()
    _write(str(base / "meta.json"), item_lines + [line for line, _ in bad_items])
    users = [f"A{u}" for u in range(25)]
    good, n = [], 0
    for user in users:
        heavy = user == "A0"
        count = 40 if heavy else 12 if user == "A1" else rng.randrange(2, 16)
        days = 3 if user == "A1" else 60  # A1: several reviews a day
        for item in rng.sample(sorted(items), count):
            review, shown, token = _amazon_review(rng, n, heavy)
            ts = T0 + 86_400 * rng.randrange(days)
            row = _amazon_row(user, item, rng.choice([1, 2, 3, 4, 5, 4.0, "5"]), ts, review)
            line = json.dumps(row, ensure_ascii=n % 2 == 0).encode()
            rating = float(row["overall"])
            event_id = logs.derived_event_id(json.loads(line))
            good.append(Good(line, user, item, ts, rating, event_id, shown, token))
            n += 1
    resent = rng.sample(good, 30)
    # Re-sent with the keys in another order and other spacing: the same fields.
    resent_lines = [
        json.dumps(dict(reversed(json.loads(g.line).items())), separators=(",", ":")).encode()
        for g in resent
    ]
    bad = [_amazon_bad(rng, n, users, sorted(items)) for n in range(480)]
    bad += [
        (json.dumps(_amazon_row("A2", item, 5, T0, "<x>")).encode(), "unknown_item")
        for item in AMAZON_BAD_IDS
    ]
    lines = [g.line for g in good] + resent_lines + [line for line, _ in bad]
    rng.shuffle(lines)
    _write(str(base / "reviews.json"), lines)
    config = dataclasses.replace(AMAZON_REVIEWS, max_bad_fraction=1.0)
    return _ingest(base, tmp_path_factory, config, good, resent, bad + bad_items, items)


# --- the checks every layout must pass ------------------------------------------


def _implied_kinds(config: LogConfig, g: Good) -> List[str]:
    kinds = list(config.row_implies)
    threshold = config.purchase_min_rating
    if threshold is not None and g.rating >= threshold and "purchase" not in kinds:
        kinds.append("purchase")
    return kinds


def _check_dead_letters(run: Run) -> None:
    expected = collections.Counter(reason for _, reason in run.bad)
    assert {k[4:]: v for k, v in run.report.items() if k.startswith("bad:")} == dict(expected)
    letters = [d for d in run.dead if d["reason"] != "duplicate_event"]
    assert collections.Counter((d["reason"], d["original"]) for d in letters) == (
        collections.Counter(
            (reason, line.decode("utf-8", "backslashreplace")[:20_000]) for line, reason in run.bad
        )
    )
    assert all(d["detail"] and d["source"] for d in letters)


def _check_duplicates(run: Run) -> None:
    expected = collections.Counter(
        f"{g.event_id}:{kind}" for g in run.resent for kind in _implied_kinds(run.config, g)
    )
    assert run.report["duplicate_events"] == sum(expected.values())
    duplicates = [json.loads(d["original"]) for d in run.dead if d["reason"] == "duplicate_event"]
    assert collections.Counter(d["event_id"] for d in duplicates) == expected


def _check_examples(run: Run) -> None:
    """Every good row gives one clicked example with its labels, plus its sampled
    negatives; nothing else becomes an example."""
    by_id = {g.event_id: g for g in run.good}
    assert len(by_id) == len(run.good)  # the good rows are distinct
    positives = [e for e in run.examples if _value(e, F.CLICK) == 1]
    assert sorted(_value(e, F.EVENT_ID) for e in positives) == sorted(
        f"{g.event_id}:impression" for g in run.good
    )
    for e in positives:
        g = by_id[_value(e, F.EVENT_ID).rsplit(":", 1)[0]]
        purchase = int("purchase" in _implied_kinds(run.config, g))
        assert (_value(e, F.USER_ID), _value(e, F.ITEM_ID), _value(e, F.TIMESTAMP)) == (
            g.user, g.item, g.timestamp,
        )  # fmt: skip
        assert (_value(e, F.RATING), _value(e, F.RATING_WEIGHT), _value(e, F.PURCHASE)) == (
            g.rating, 1.0, purchase,
        )  # fmt: skip
    known = collections.defaultdict(set)
    for g in run.good:
        known[g.user].add(g.item)
    negatives = [e for e in run.examples if _value(e, F.CLICK) == 0]
    for e in negatives:
        row_id, _, draw = _value(e, F.EVENT_ID).rpartition(":impression:")
        g = by_id[row_id]
        assert draw.startswith("negative")
        assert (_value(e, F.USER_ID), _value(e, F.TIMESTAMP)) == (g.user, g.timestamp)
        assert _value(e, F.ITEM_ID) not in known[g.user]  # never an item the user had
        assert _value(e, F.ITEM_ID) in run.items  # never an item of a bad catalogue row
        assert (_value(e, F.RATING_WEIGHT), _value(e, F.PURCHASE)) == (0.0, 0)
    assert len(negatives) == run.report["sampled_negatives"]
    wanted = run.config.negatives_per_positive * len(run.good)
    assert run.report["sampled_negatives"] + run.report.get("negatives_unavailable", 0) == wanted
    assert run.report["examples"] == len(run.examples) == len(positives) + len(negatives)
    assert run.report["examples_train"] + run.report["examples_eval"] == len(run.examples)
    for e in run.examples:  # the catalogue's title and (first) category
        assert (_value(e, F.ITEM_TITLE), _value(e, F.ITEM_CATEGORY)) == run.items[
            _value(e, F.ITEM_ID)
        ]


def _check_all(run: Run) -> None:
    _check_dead_letters(run)
    _check_duplicates(run)
    _check_examples(run)


# --- MovieLens "latest" -----------------------------------------------------------


def test_movielens_latest_bad_rows_are_dead_lettered_with_their_reasons(latest):
    _check_dead_letters(latest)
    reasons = collections.Counter(reason for _, reason in latest.bad)
    assert reasons["bad_rating"] >= 40 and reasons["invalid_utf8"] >= 40
    assert reasons["unparseable"] >= 120 and reasons["unknown_item"] >= 40


def test_movielens_latest_good_rows_give_their_labels_and_negatives(latest):
    _check_examples(latest)
    assert {g.rating for g in latest.good} == set(HALF_STARS)  # every half star, 0.5 and 5


def test_movielens_latest_re_sent_rows_are_duplicates_of_every_implied_event(latest):
    _check_duplicates(latest)
    # Three per row (impression, click, rating), four when the rating implies a purchase.
    kinds = collections.Counter(len(_implied_kinds(latest.config, g)) for g in latest.resent)
    assert set(kinds) == {3, 4}


def test_movielens_latest_report_counts_good_rows_as_rows(latest):
    assert latest.report["good_event_rows"] == len(latest.good) + len(latest.resent)


# --- MovieLens-100K ---------------------------------------------------------------


def test_movielens_100k_u_data_fuzz_gives_exact_dead_letters_labels_and_duplicates(ml100k):
    run, _ = ml100k
    _check_all(run)
    reasons = collections.Counter(reason for _, reason in run.bad)
    assert reasons["unparseable"] >= 150 and reasons["bad_rating"] >= 40
    assert reasons["bad_timestamp"] >= 50  # header lines, the first one included


def test_movielens_100k_examples_carry_the_user_table_profile(ml100k):
    run, profiles = ml100k
    for e in run.examples:
        assert _value(e, F.USER_PROFILE) == profiles.get(_value(e, F.USER_ID), "")
    assert {_value(e, F.USER_ID) for e in run.examples} >= {"1", "31", "32"}


# --- Amazon reviews -------------------------------------------------------------


def test_amazon_reviews_fuzz_gives_exact_dead_letters_labels_and_duplicates(amazon):
    _check_all(amazon)
    reasons = collections.Counter(reason for _, reason in amazon.bad)
    assert reasons["bad_review_text"] >= 100


def _reviews_before(run: Run, g: Good) -> List[str]:
    """The user's reviews strictly before ``g``, newest first, in the order the
    events are walked (time, then event id)."""
    earlier = sorted(
        (o.timestamp, f"{o.event_id}:rating", o.review)
        for o in run.good
        if o.user == g.user and o.timestamp < g.timestamp and o.review
    )
    return [text[: logs.REVIEW_CHARS] for _, _, text in reversed(earlier)]


def test_amazon_user_text_holds_only_earlier_reviews_of_the_user_and_is_bounded(amazon):
    by_id = {g.event_id: g for g in amazon.good}
    by_token = {g.token: g for g in amazon.good if g.token}
    bound = (
        len("reviews: ")
        + logs.REVIEWS_KEPT * logs.REVIEW_CHARS
        + (logs.REVIEWS_KEPT - 1) * len(F.HISTORY_SEPARATOR)
    )
    longest = 0
    for e in amazon.examples:
        g = by_id[_value(e, F.EVENT_ID).split(":")[0]]
        text = _value(e, F.USER_PROFILE)
        longest = max(longest, len(text))
        assert len(text) <= bound
        assert not any(ord(c) < 32 and c != "\t" for c in text)
        assert g.token is None or g.token not in text  # never the row's own review
        assert "<x" not in text  # never a bad row's
        for token, other in by_token.items():
            if token in text:
                assert other.user == g.user and other.timestamp < g.timestamp
        assert text == logs.user_text("", _reviews_before(amazon, g)[: logs.REVIEWS_KEPT])
    assert longest == bound  # the heavy reviewer reaches the bound, never more


def test_amazon_same_day_reviews_never_see_each_other(amazon):
    same_day = collections.Counter((g.user, g.timestamp) for g in amazon.good)
    assert max(same_day.values()) >= 3  # the fuzz has such days
    first = {}
    for e in amazon.examples:
        key = (_value(e, F.USER_ID), _value(e, F.TIMESTAMP))
        first.setdefault(key, _value(e, F.USER_PROFILE))
        assert _value(e, F.USER_PROFILE) == first[key]  # one day, one text


def test_amazon_popularity_negatives_are_items_someone_was_shown(amazon):
    shown = {g.item for g in amazon.good}
    negatives = [e for e in amazon.examples if _value(e, F.CLICK) == 0]
    assert negatives and {_value(e, F.ITEM_ID) for e in negatives} <= shown


# --- the catalogues: multi-valued fields ----------------------------------------


def test_bad_catalogue_rows_are_item_dead_letters_and_their_events_unknown_items(latest, amazon):
    for run, bad_ids in ((latest, ML_BAD_IDS), (amazon, AMAZON_BAD_IDS)):
        item_reasons = collections.Counter(r for _, r in run.bad if r.startswith("item_"))
        assert {k[4:]: v for k, v in run.report.items() if k.startswith("bad:item_")} == dict(
            item_reasons
        )
        assert item_reasons["item_missing_category"] >= 3
        assert not set(bad_ids) & {_value(e, F.ITEM_ID) for e in run.examples}
    # Rows rating an item whose catalogue row is bad are dead letters, unknown_item.
    unknown = [d["original"] for d in latest.dead if d["reason"] == "unknown_item"]
    assert set(ML_BAD_IDS) <= {line.split(",")[1] for line in unknown}
    unknown = [d["original"] for d in amazon.dead if d["reason"] == "unknown_item"]
    assert set(AMAZON_BAD_IDS) <= {json.loads(line)["asin"] for line in unknown}


def test_multi_valued_categories_give_the_first_value_and_bounded_tags(latest, amazon):
    huge = {"latest": "G0", "amazon": "C0"}
    for name, run in (("latest", latest), ("amazon", amazon)):
        categories = {_value(e, F.ITEM_CATEGORY) for e in run.examples}
        assert huge[name] in categories and "" not in categories
        for e in run.examples:
            description = _value(e, F.ITEM_DESCRIPTION)
            assert len(description) <= logs.MAX_FIELD_CHARS
            if _value(e, F.ITEM_CATEGORY) == huge[name]:  # at most MAX_LIST_VALUES of them
                prefix = huge[name][0]
                words = [w for w in description.split() if w.startswith(prefix)]
                assert words == [f"{prefix}{k}" for k in range(logs.MAX_LIST_VALUES)]


def test_a_tab_in_review_text_is_kept_whatever_else_the_text_holds():
    def review(text):
        row = _amazon_row("A1", "B0", 5, T0, text)
        event = logs.normalize_event(row, AMAZON_REVIEWS, MAX_TIMESTAMP)
        return [e for e in logs.implied_events(event, AMAZON_REVIEWS) if "review_text" in e]

    assert review("a\tb")[0]["review_text"] == "a\tb"
    assert review("a\tb\x07c")[0]["review_text"] == "a\tb c"


# --- rows nested deep enough to exhaust the stack ---------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + '"Toys"' + "]" * depth


def test_deeply_nested_category_lists_are_dead_lettered_not_a_crash(tmp_path):
    base = tmp_path / "in"
    depths = [10, 300, 600, 900, 5_000]
    meta = [b'{"asin": "B0", "title": "T", "categories": [["Toys"]]}'] + [
        f'{{"asin": "N{d}", "title": "T", "categories": {_nested(d)}}}'.encode() for d in depths
    ]
    _write(str(base / "meta.json"), meta)
    items = ["B0"] + [f"N{d}" for d in depths]
    rows = [_amazon_row(f"A{i}", item, 5, T0 + i) for i, item in enumerate(items)]
    _write(str(base / "reviews.json"), [json.dumps(r).encode() for r in rows])
    config = dataclasses.replace(AMAZON_REVIEWS, negatives_per_positive=0)
    examples, report, dead = ingest(base, config, tmp_path / "out")
    # Each catalogue row is usable (its rating gives an example) or an item dead
    # letter (its rating an unknown_item); 5,000 deep is too deep for JSON.
    kept = {_value(e, F.ITEM_ID) for e in examples["train"] + examples["eval"]}
    unknown = {json.loads(d["original"])["asin"] for d in dead if d["reason"] == "unknown_item"}
    assert kept | unknown == set(items) and not kept & unknown and "N5000" in unknown
    assert len([d for d in dead if d["reason"].startswith("item_")]) == len(unknown)


def test_rows_nested_just_below_the_json_limit_are_not_a_crash(tmp_path):
    base = tmp_path / "in"
    _write(str(base / "meta.json"), [b'{"asin": "B0", "title": "T", "categories": [["Toys"]]}'])
    rows = []
    for depth in range(700, 1_000):  # every depth up to the recursion limit
        row = json.dumps(_amazon_row(f"A{depth}", "B0", 5, T0 + depth))
        rows.append(row[:-1].encode() + f', "votes": {_nested(depth)}}}'.encode())
    _write(str(base / "reviews.json"), rows)
    config = dataclasses.replace(AMAZON_REVIEWS, negatives_per_positive=0, max_bad_fraction=1.0)
    examples, report, dead = ingest(base, config, tmp_path / "out")
    kept = len(examples["train"] + examples["eval"])
    assert kept + report.get("bad:unparseable", 0) == len(rows)
