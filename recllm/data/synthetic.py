"""Deterministic synthetic landing data with known ground-truth preferences.

`generate` produces, day by day, the raw `events_raw`, `items_raw` and `users_raw` frames
the ingest job reads: a catalogue with readable text, users with latent category tastes,
impressions whose clicks follow a known click model, searches, purchases, likes and
ratings, new items and users on later days, and a small share of injected bad rows whose
rejection reasons are known in advance, each day a `LandedDay`. Pure pandas/numpy: tests and
the demo use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Callable

import numpy as np
import pandas as pd

from recllm.data.frames import LandedDay, object_frame
from schemas import EVENTS_RAW, ITEMS_RAW, USERS_RAW

CLICK_A = 0.6
"""Weight of the user's taste for the item's category (scaled by the number of categories)."""
CLICK_B = -2.6
"""Click-model bias; with CLICK_A it puts the overall CTR around 20%."""
QUALITY_SD = 0.5
SEARCHES_PER_USER_DAY = 0.4
ACTIVE_FRACTION = 0.8
P_PURCHASE, P_LIKE, P_RATING = 0.12, 0.15, 0.10
IMAGE_NONE_FRACTION = 0.1
TRAFFIC_START_S = 3600
"""Events of a day happen after this second; the day's new items and users land before it."""
DAY_S = 86400

EVENT_REASONS = (
    "null_id",
    "unknown_user",
    "unknown_item",
    "unparseable_ts",
    "future_ts",
    "duplicate_id",
    "bad_type",
    "out_of_range",
    "unknown_event_type",
)
ITEM_REASONS = ("null_id", "duplicate_id", "bad_type", "out_of_range", "unparseable_ts", "missing_field")
USER_REASONS = ("null_id", "duplicate_id", "bad_type", "out_of_range", "unparseable_ts")
BAD_TIMESTAMPS = ("yesterday", "2026-13-45", "not a time", "31/02/2026 25:61")

EVENT_FIELDS = ("user", "item", "event_type", "scenario", "query", "value", "second")
NEGATIVE_PURCHASE = {"event_type": "purchase", "value": "-5.00"}
RATING_ABOVE_FIVE = {"event_type": "rating", "value": "7.5"}

GENDERS = ("female", "male", "nonbinary", None)
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "ES")


@dataclass(frozen=True)
class Category:
    """One catalogue category and the words its titles, descriptions and queries use."""

    name: str
    brands: tuple[str, ...]
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    uses: tuple[str, ...]
    price_range: tuple[float, float]


def _category(
    name: str, brands: str, adjectives: str, nouns: str, uses: str, price_range: tuple[float, float]
) -> Category:
    """A Category from pipe-separated word lists."""
    return Category(name, *(tuple(w.split("|")) for w in (brands, adjectives, nouns, uses)), price_range)


CATEGORIES = (
    _category(
        "running shoes", "Acme|Stride|Velo",
        "Trail|Road|Tempo|Cushioned|Lightweight", "Runner|Racer|Trainer",
        "long runs|trail running|marathon training", (50, 180),
    ),
    _category(
        "coffee makers", "Brewster|Morningside|Barista Bros",
        "Espresso|Drip|Pour-Over|Programmable", "Machine|Brewer|Coffee Maker",
        "a rich morning espresso|brewing for the office|slow weekend coffee", (30, 400),
    ),
    _category(
        "headphones", "SoundWave|Auralis|Beatline",
        "Wireless|Noise-Cancelling|Over-Ear|Studio", "Headphones|Earbuds|Headset",
        "commuting|studio monitoring|gaming", (25, 350),
    ),
    _category(
        "camping tents", "Summit|Trailhead|Northpeak",
        "Two-Person|Ultralight|Family|Waterproof", "Tent|Shelter|Dome",
        "backpacking trips|family camping|alpine weather", (50, 500),
    ),
    _category(
        "board games", "Meeple|Dicebox|Gamewright",
        "Strategy|Party|Cooperative|Family", "Game|Adventure|Quest",
        "game night|two players|the whole family", (15, 80),
    ),
    _category(
        "kitchen knives", "Keenblade|Steelworks|Hanzo",
        "Chef's|Santoku|Paring|Damascus", "Knife|Blade|Knife Set",
        "slicing vegetables|precise prep work|carving roasts", (20, 250),
    ),
    _category(
        "yoga mats", "Lotus|Zenfit|Flowline",
        "Non-Slip|Extra-Thick|Travel|Eco", "Yoga Mat|Exercise Mat|Mat",
        "hot yoga|pilates|stretching at home", (15, 120),
    ),
    _category(
        "science fiction books", "Orbit Press|Nebula Books|Farstar",
        "Galactic|Dystopian|Space|Time-Travel", "Novel|Saga|Chronicle",
        "fans of space opera|late-night reading|book clubs", (8, 35),
    ),
    _category(
        "desk lamps", "Luma|Brightway|Lumenix",
        "LED|Adjustable|Dimmable|Architect", "Desk Lamp|Task Light|Lamp",
        "late-night study|home offices|reading in bed", (15, 150),
    ),
    _category(
        "backpacks", "Packwell|Roamer|Urbanpack",
        "Hiking|Laptop|Rolltop|Everyday", "Backpack|Pack|Rucksack",
        "day hikes|daily commutes|weekend travel", (30, 200),
    ),
    _category(
        "smartwatches", "Pulse|Chronotech|Fitwise",
        "Fitness|GPS|Hybrid|Sport", "Smartwatch|Watch|Tracker",
        "tracking workouts|sleep tracking|staying connected", (50, 450),
    ),
    _category(
        "houseplants", "Greenleaf|Rootsy|Fernhouse",
        "Potted|Low-Light|Flowering|Hanging", "Plant|Fern|Succulent",
        "shady corners|bright windowsills|beginner gardeners", (8, 60),
    ),
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape knobs of the synthetic world; the seed makes it reproducible."""

    seed: int = 7
    n_users: int = 200
    n_items: int = 300
    n_categories: int = 8
    n_days: int = 3
    start_ds: str = "2026-01-01"
    impressions_per_user_day: float = 12
    new_item_fraction_per_day: float = 0.05
    new_user_fraction_per_day: float = 0.05
    bad_row_fraction: float = 0.02
    image_dim: int = 16
    scenarios: tuple[str, ...] = ("home_feed", "search", "detail_page")


def click_probabilities(taste: np.ndarray, category: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """The true click model: sigmoid(a * taste[u, cat(i)] * n_categories + quality(i) + b)."""
    n_categories = taste.shape[-1]
    affinity = taste[category] if taste.ndim == 1 else taste[np.arange(len(category)), category]
    return 1.0 / (1.0 + np.exp(-(CLICK_A * affinity * n_categories + quality + CLICK_B)))


@dataclass(eq=False)
class GroundTruth:
    """What the generator knows and models must discover: tastes, categories, qualities."""

    user_taste: np.ndarray
    item_category: np.ndarray
    item_quality: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    category_names: list[str]
    user_first_ds: list[str] = field(default_factory=list)
    item_first_ds: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._user_index = {u: k for k, u in enumerate(self.user_ids)}
        self._item_index = {i: k for k, i in enumerate(self.item_ids)}

    def click_probability(self, user_id: str, item_id: str) -> float:
        """True probability that the user clicks the item when it is shown."""
        return float(self.click_probabilities([user_id], [item_id])[0])

    def click_probabilities(self, user_ids: list[str], item_ids: list[str]) -> np.ndarray:
        """True click probabilities of aligned (user, item) id pairs."""
        u = np.array([self._user_index[x] for x in user_ids], dtype=int)
        i = np.array([self._item_index[x] for x in item_ids], dtype=int)
        return click_probabilities(self.user_taste[u], self.item_category[i], self.item_quality[i])


@dataclass
class _World:
    """Mutable state of the simulation: every good user and item landed so far."""

    config: SyntheticConfig
    categories: tuple[Category, ...]
    centroids: np.ndarray
    taste: np.ndarray
    user_ids: list[str] = field(default_factory=list)
    user_first_ds: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    item_first_ds: list[str] = field(default_factory=list)
    item_category: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    item_quality: np.ndarray = field(default_factory=lambda: np.zeros(0))
    item_popularity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    item_price: list[str] = field(default_factory=list)

    def ground_truth(self) -> GroundTruth:
        """Freeze the world's hidden state into a GroundTruth."""
        return GroundTruth(
            user_taste=self.taste.copy(),
            item_category=self.item_category.copy(),
            item_quality=self.item_quality.copy(),
            user_ids=list(self.user_ids),
            item_ids=list(self.item_ids),
            category_names=[c.name for c in self.categories],
            user_first_ds=list(self.user_first_ds),
            item_first_ds=list(self.item_first_ds),
        )


def generate(config: SyntheticConfig = SyntheticConfig()) -> tuple[list[LandedDay], GroundTruth]:
    """Simulate `config.n_days` days of landings; deterministic for a given config."""
    _validate(config)
    rng = np.random.default_rng(config.seed)
    categories = CATEGORIES[: config.n_categories]
    world = _World(
        config=config,
        categories=categories,
        centroids=rng.normal(0.0, 1.0, size=(len(categories), config.image_dim)),
        taste=np.zeros((0, len(categories))),
    )
    days = []
    for d in range(config.n_days):
        ds = (date.fromisoformat(config.start_ds) + timedelta(days=d)).isoformat()
        n_new_users = config.n_users if d == 0 else _arrivals(config.n_users, config.new_user_fraction_per_day)
        n_new_items = config.n_items if d == 0 else _arrivals(config.n_items, config.new_item_fraction_per_day)
        users = _land_users(world, n_new_users, ds, initial=d == 0, rng=rng)
        items = _land_items(world, n_new_items, ds, initial=d == 0, rng=rng)
        events = _simulate_events(world, ds, new_users=n_new_users, new_items=n_new_items, rng=rng)
        days.append(_with_bad_rows(world, ds, events, items, users, rng))
    return days, world.ground_truth()


def _validate(config: SyntheticConfig) -> None:
    """Reject configs the generator cannot honour."""
    if config.n_days < 1 or config.n_users < 1 or config.n_items < 1:
        raise ValueError("n_days, n_users and n_items must be positive")
    if not 1 <= config.n_categories <= len(CATEGORIES):
        raise ValueError(f"n_categories must be in 1..{len(CATEGORIES)}")
    if not 0 <= config.bad_row_fraction < 1:
        raise ValueError("bad_row_fraction must be in [0, 1)")
    if not config.scenarios:
        raise ValueError("scenarios must not be empty")


def _arrivals(base: int, fraction: float) -> int:
    """Number of new users or items landing on a later day (at least one when fraction > 0)."""
    return max(1, round(base * fraction)) if fraction > 0 else 0


def _iso(day: str, seconds: np.ndarray) -> list[str]:
    """ISO 8601 UTC strings for offsets in seconds from the start of a day."""
    stamps = np.datetime64(day, "s") + np.asarray(seconds, dtype="int64").astype("timedelta64[s]")
    return [s + "Z" for s in np.datetime_as_string(stamps, unit="s")]


def _created_seconds(n: int, initial: bool, rng: np.random.Generator) -> np.ndarray:
    """Creation offsets: up to a year back for the initial landing, else before the day's traffic."""
    if initial:
        return -rng.integers(1, 365 * DAY_S, size=n)
    return rng.integers(0, TRAFFIC_START_S, size=n)


def _draw_tastes(n: int, n_categories: int, rng: np.random.Generator) -> np.ndarray:
    """Concentrated Dirichlet tastes: every user strongly prefers one or two categories."""
    alpha = np.full((n, n_categories), 0.1)
    rows = np.arange(n)
    favourites = rng.integers(0, n_categories, size=(n, 2))
    alpha[rows, favourites[:, 0]] += 5.0
    second = rng.random(n) < 0.5
    alpha[rows[second], favourites[second, 1]] += 3.0
    gammas = rng.gamma(alpha)
    return gammas / gammas.sum(axis=1, keepdims=True)


def _land_users(world: _World, n: int, ds: str, initial: bool, rng: np.random.Generator) -> pd.DataFrame:
    """Create n good users, add them to the world and return their users_raw rows."""
    start = len(world.user_ids)
    ids = [f"u{start + k:05d}" for k in range(n)]
    taste = _draw_tastes(n, len(world.categories), rng)
    world.taste = np.vstack([world.taste, taste])
    world.user_ids += ids
    world.user_first_ds += [ds] * n
    return _user_rows(ids, taste, ds, initial, world.categories, rng)


def _user_rows(
    ids: list[str | None],
    taste: np.ndarray,
    ds: str,
    initial: bool,
    categories: tuple[Category, ...],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """users_raw rows for the given ids and tastes (half of the profiles mention a favourite)."""
    n = len(ids)
    ages = rng.integers(13, 91, size=n)
    genders = rng.integers(0, len(GENDERS), size=n)
    countries = rng.integers(0, len(COUNTRIES), size=n)
    has_profile = rng.random(n) < 0.5
    top = taste.argmax(axis=1) if n else np.zeros(0, dtype=int)
    return object_frame(
        USERS_RAW.column_names,
        {
            "user_id": ids,
            "age": [str(a) for a in ages],
            "gender": [GENDERS[g] for g in genders],
            "country": [COUNTRIES[c] for c in countries],
            "profile_text": [f"Really into {categories[t].name}." if p else None for t, p in zip(top, has_profile)],
            "created_ts": _iso(ds, _created_seconds(n, initial, rng)),
            "ds": [ds] * n,
        },
    )


def _land_items(world: _World, n: int, ds: str, initial: bool, rng: np.random.Generator) -> pd.DataFrame:
    """Create n good items, add them to the world and return their items_raw rows."""
    start = len(world.item_ids)
    ids = [f"i{start + k:05d}" for k in range(n)]
    category = rng.integers(0, len(world.categories), size=n)
    rows = _item_rows(ids, category, ds, initial, world, rng)
    world.item_ids += ids
    world.item_first_ds += [ds] * n
    world.item_category = np.concatenate([world.item_category, category])
    world.item_quality = np.concatenate([world.item_quality, rng.normal(0.0, QUALITY_SD, size=n)])
    world.item_popularity = np.concatenate([world.item_popularity, rng.lognormal(0.0, 1.0, size=n)])
    world.item_price += list(rows["price"])
    return rows


def _item_rows(
    ids: list[str | None], category: np.ndarray, ds: str, initial: bool, world: _World, rng: np.random.Generator
) -> pd.DataFrame:
    """items_raw rows with readable text, a category-dependent price and an image embedding."""
    n = len(ids)
    texts = [_item_text(world.categories[c], rng) for c in category]
    lo_hi = np.array([world.categories[c].price_range for c in category], dtype=float).reshape(n, 2)
    prices = np.exp(rng.uniform(np.log(lo_hi[:, 0]), np.log(lo_hi[:, 1]))) if n else np.zeros(0)
    noise = rng.normal(0.0, 0.3, size=(n, world.config.image_dim))
    images = world.centroids[category] + noise
    no = rng.random(n) < IMAGE_NONE_FRACTION
    return object_frame(
        ITEMS_RAW.column_names,
        {
            "item_id": ids,
            "title": [t[0] for t in texts],
            "description": [t[1] for t in texts],
            "category": [world.categories[c].name for c in category],
            "brand": [t[2] for t in texts],
            "price": [f"{p:.2f}" for p in prices],
            "image_embedding": [None if skip else [round(float(x), 6) for x in v] for v, skip in zip(images, no)],
            "created_ts": _iso(ds, _created_seconds(n, initial, rng)),
            "ds": [ds] * n,
        },
    )


def _item_text(category: Category, rng: np.random.Generator) -> tuple[str, str, str]:
    """A title like "Acme Trail Runner 3", a description in the category's words, and the brand."""
    brand = category.brands[rng.integers(len(category.brands))]
    adjective = category.adjectives[rng.integers(len(category.adjectives))]
    noun = category.nouns[rng.integers(len(category.nouns))]
    use = category.uses[rng.integers(len(category.uses))]
    title = f"{brand} {adjective} {noun} {rng.integers(1, 10)}"
    description = f"{adjective} {noun.lower()} from {brand}, made for {use}. Part of our {category.name} range."
    return title, description, brand


def _query(category: Category, rng: np.random.Generator) -> str:
    """A search query in the category's words."""
    adjective = category.adjectives[rng.integers(len(category.adjectives))].lower()
    noun = category.nouns[rng.integers(len(category.nouns))].lower()
    return [f"{adjective} {noun}", category.name, f"{noun} for {category.uses[rng.integers(len(category.uses))]}"][
        rng.integers(3)
    ]


def _impression_weights(world: _World, n_available: int, new_items: int) -> np.ndarray:
    """Exposure mix: popular items, uniformly random items, and a boost for the day's new items."""
    popularity = world.item_popularity[:n_available]
    weights = 0.45 * popularity / popularity.sum() + 0.45 / n_available
    if new_items:
        weights[n_available - new_items :] += 0.10 / new_items
    else:
        weights += 0.10 / n_available
    return weights / weights.sum()


def _simulate_events(world: _World, ds: str, new_users: int, new_items: int, rng: np.random.Generator) -> pd.DataFrame:
    """All good events of one day, each user's in increasing time order, ids in time order."""
    config = world.config
    n_users, n_items = len(world.user_ids), len(world.item_ids)
    weights = _impression_weights(world, n_items, new_items)
    by_category = [np.flatnonzero(world.item_category == c) for c in range(len(world.categories))]
    feed_scenarios = [s for s in config.scenarios if s != "search"] or list(config.scenarios)
    searching = "search" in config.scenarios
    active = rng.random(n_users) < ACTIVE_FRACTION
    active[n_users - new_users :] = True
    columns: dict[str, list[Any]] = {c: [] for c in EVENT_FIELDS}
    for u in np.flatnonzero(active):
        sessions = _feed_sessions(world, u, n_items, weights, feed_scenarios, rng)
        if searching:
            sessions += _search_sessions(world, u, by_category, rng)
        _append_user_day(columns, u, sessions, rng)
    return _events_frame(world, ds, columns)


def _feed_sessions(
    world: _World, u: int, n_items: int, weights: np.ndarray, scenarios: list[str], rng: np.random.Generator
) -> list[list[tuple]]:
    """Impressions for one user, each followed by the click and its follow-ups when clicked."""
    k = min(int(rng.poisson(world.config.impressions_per_user_day)), n_items)
    shown = rng.choice(n_items, size=k, replace=False, p=weights)
    p = click_probabilities(world.taste[u], world.item_category[shown], world.item_quality[shown])
    clicked = rng.random(k) < p
    scenario = rng.integers(0, len(scenarios), size=k)
    sessions = []
    for item, prob, click, s in zip(shown, p, clicked, scenario):
        events = [(item, "impression", scenarios[s], None, None)]
        if click:
            events += _click_and_follow_ups(world, item, prob, scenarios[s], None, rng)
        sessions.append(events)
    return sessions


def _search_sessions(
    world: _World, u: int, by_category: list[np.ndarray], rng: np.random.Generator
) -> list[list[tuple]]:
    """Searches for categories the user likes, each followed by a click on an item of that category."""
    sessions = []
    for _ in range(int(rng.poisson(SEARCHES_PER_USER_DAY))):
        category = int(rng.choice(len(world.categories), p=world.taste[u]))
        candidates = by_category[category]
        if candidates.size == 0:
            continue
        appeal = world.item_popularity[candidates] * np.exp(world.item_quality[candidates])
        item = int(rng.choice(candidates, p=appeal / appeal.sum()))
        query = _query(world.categories[category], rng)
        prob = float(click_probabilities(world.taste[u], world.item_category[[item]], world.item_quality[[item]])[0])
        search = (item, "search", "search", query, None)
        sessions.append([search, *_click_and_follow_ups(world, item, prob, "search", query, rng)])
    return sessions


def _click_and_follow_ups(
    world: _World, item: int, prob: float, scenario: str, query: str | None, rng: np.random.Generator
) -> list[tuple]:
    """A click, then maybe a purchase (value = price), a like and a rating that tracks p_click."""
    draws = rng.random(3)
    events = [(item, "click", scenario, query, None)]
    if draws[0] < P_PURCHASE:
        events.append((item, "purchase", scenario, query, world.item_price[item]))
    if draws[1] < P_LIKE:
        events.append((item, "like", scenario, query, None))
    if draws[2] < P_RATING:
        rating = float(np.clip(np.round((1.0 + 4.0 * prob + rng.normal(0.0, 0.5)) * 2) / 2, 0.5, 5.0))
        events.append((item, "rating", scenario, query, f"{rating:.1f}"))
    return events


def _append_user_day(
    columns: dict[str, list[Any]], u: int, sessions: list[list[tuple]], rng: np.random.Generator
) -> None:
    """Shuffle a user's sessions, flatten them and give them strictly increasing seconds."""
    order = rng.permutation(len(sessions))
    events = [e for k in order for e in sessions[k]]
    seconds = TRAFFIC_START_S + np.sort(rng.choice(DAY_S - TRAFFIC_START_S, size=len(events), replace=False))
    for (item, event_type, scenario, query, value), second in zip(events, seconds):
        for name, v in zip(columns, (u, item, event_type, scenario, query, value, second)):
            columns[name].append(v)


def _events_frame(world: _World, ds: str, columns: dict[str, list[Any]]) -> pd.DataFrame:
    """events_raw rows sorted by time, with ids e{ds}-{n} in that order."""
    second = np.array(columns["second"], dtype="int64")
    user = np.array(columns["user"], dtype=int)
    order = np.lexsort((user, second))
    n = len(order)
    pick = lambda values: [values[k] for k in order]  # noqa: E731
    return object_frame(
        EVENTS_RAW.column_names,
        {
            "event_id": [f"e{ds}-{k:06d}" for k in range(n)],
            "user_id": [world.user_ids[u] for u in user[order]],
            "item_id": [world.item_ids[i] for i in pick(columns["item"])],
            "event_type": pick(columns["event_type"]),
            "scenario": pick(columns["scenario"]),
            "query": pick(columns["query"]),
            "value": pick(columns["value"]),
            "ts": _iso(ds, second[order]),
            "ds": [ds] * n,
        },
    )


def _plan_bad_rows(reasons: tuple[str, ...], n_good: int, fraction: float, rng: np.random.Generator) -> list[str]:
    """The reasons of a table's bad rows: every reason once, then random ones up to the fraction."""
    if fraction <= 0 or n_good == 0:
        return []
    n_bad = max(len(reasons), round(fraction * n_good / (1 - fraction)))
    extra = rng.integers(0, len(reasons), size=n_bad - len(reasons))
    return list(reasons) + [reasons[k] for k in extra]


def _insert(good: pd.DataFrame, bad: list[tuple[dict[str, Any], int]], rng: np.random.Generator) -> pd.DataFrame:
    """Insert bad rows at random positions; a row with an anchor k lands after good row k."""
    if not bad:
        return good
    n = len(good)
    keys = [float(k) for k in range(n)]
    for _, anchor in bad:
        keys.append(float(rng.integers(anchor + 1, n + 1)) - 0.5)
    rows = pd.DataFrame([row for row, _ in bad], columns=good.columns).astype(object)
    both = pd.concat([good, rows], ignore_index=True)
    return both.iloc[np.argsort(np.array(keys), kind="stable")].reset_index(drop=True)


def _counts(table: str, reasons: list[str]) -> dict[tuple[str, str], int]:
    """expected_rejects entries for one table."""
    counts: dict[tuple[str, str], int] = {}
    for reason in reasons:
        counts[(table, reason)] = counts.get((table, reason), 0) + 1
    return counts


def _with_bad_rows(
    world: _World, ds: str, events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, rng: np.random.Generator
) -> LandedDay:
    """Inject each table's bad rows and record how many of each reason went in."""
    fraction = world.config.bad_row_fraction
    plans = {
        "events_raw": _plan_bad_rows(EVENT_REASONS, len(events), fraction, rng),
        "items_raw": _plan_bad_rows(ITEM_REASONS, len(items), fraction, rng),
        "users_raw": _plan_bad_rows(USER_REASONS, len(users), fraction, rng),
    }
    bad_events = [_bad_event(reason, k, events, ds, rng) for k, reason in enumerate(plans["events_raw"])]
    bad_items = [_bad_item(reason, k, items, ds, world, rng) for k, reason in enumerate(plans["items_raw"])]
    bad_users = [_bad_user(reason, k, users, ds, world, rng) for k, reason in enumerate(plans["users_raw"])]
    expected: dict[tuple[str, str], int] = {}
    for table, reasons in plans.items():
        expected.update(_counts(table, reasons))
    return LandedDay(
        ds=ds,
        events_raw=_insert(events, bad_events, rng),
        items_raw=_insert(items, bad_items, rng),
        users_raw=_insert(users, bad_users, rng),
        expected_rejects=expected,
    )


def _duplicate(good: pd.DataFrame, rng: np.random.Generator) -> tuple[dict[str, Any], int]:
    """An exact copy of a random good row, anchored after its original."""
    k = int(rng.integers(len(good)))
    return good.iloc[k].to_dict(), k


def _bad_event(
    reason: str, k: int, good: pd.DataFrame, ds: str, rng: np.random.Generator
) -> tuple[dict[str, Any], int]:
    """A bad events_raw row that breaks exactly the rule named by `reason`."""
    if reason == "duplicate_id":
        return _duplicate(good, rng)
    clicks = np.flatnonzero(good["event_type"].to_numpy() == "click")
    base = int(rng.choice(clicks)) if clicks.size else int(rng.integers(len(good)))
    row = good.iloc[base].to_dict() | {"event_id": f"e{ds}-{len(good) + k:06d}", "value": None}
    mutate: dict[str, Callable[[], dict[str, Any]]] = {
        "null_id": lambda: {("event_id", "user_id", "item_id")[rng.integers(3)]: None},
        "unknown_user": lambda: {"user_id": f"u-ghost-{ds}-{k}"},
        "unknown_item": lambda: {"item_id": f"i-ghost-{ds}-{k}"},
        "unparseable_ts": lambda: {"ts": BAD_TIMESTAMPS[rng.integers(len(BAD_TIMESTAMPS))]},
        "future_ts": lambda: {"ts": _iso(ds, np.array([3 * DAY_S + int(rng.integers(DAY_S))]))[0]},
        "bad_type": lambda: {"event_type": "purchase", "value": "abc"},
        "out_of_range": lambda: NEGATIVE_PURCHASE if rng.random() < 0.5 else RATING_ABOVE_FIVE,
        "unknown_event_type": lambda: {"event_type": "teleport"},
    }
    return row | mutate[reason](), -1


def _bad_item(
    reason: str, k: int, good: pd.DataFrame, ds: str, world: _World, rng: np.random.Generator
) -> tuple[dict[str, Any], int]:
    """A bad items_raw row (a fresh item no good event uses) breaking exactly one rule."""
    if reason == "duplicate_id":
        return _duplicate(good, rng)
    category = rng.integers(0, len(world.categories), size=1)
    row = _item_rows([f"i-bad-{ds}-{k}"], category, ds, False, world, rng).iloc[0].to_dict()
    mutate = {
        "null_id": {"item_id": None},
        "bad_type": {"price": "cheap"},
        "out_of_range": {"price": "-5"},
        "unparseable_ts": {"created_ts": BAD_TIMESTAMPS[rng.integers(len(BAD_TIMESTAMPS))]},
        "missing_field": {"title": None},
    }
    return row | mutate[reason], -1


def _bad_user(
    reason: str, k: int, good: pd.DataFrame, ds: str, world: _World, rng: np.random.Generator
) -> tuple[dict[str, Any], int]:
    """A bad users_raw row (a fresh user no good event uses) breaking exactly one rule."""
    if reason == "duplicate_id":
        return _duplicate(good, rng)
    taste = _draw_tastes(1, len(world.categories), rng)
    row = _user_rows([f"u-bad-{ds}-{k}"], taste, ds, False, world.categories, rng).iloc[0].to_dict()
    mutate = {
        "null_id": {"user_id": None},
        "bad_type": {"age": "old"},
        "out_of_range": {"age": "250"},
        "unparseable_ts": {"created_ts": BAD_TIMESTAMPS[rng.integers(len(BAD_TIMESTAMPS))]},
    }
    return row | mutate[reason], -1
