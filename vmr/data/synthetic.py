"""A small synthetic multimodal catalogue with planted structure, for `vmr demo` and tests.

Every item belongs to a latent topic. The topic decides the look of the item's video (shape,
colour, motion, background), its cover image (a still in the same style) and the words of its
title and description; each item varies the details (size, speed, phase, colour jitter, noise
texture). Users move between topics along a topic transition matrix and pick items within a
topic by popularity, so an item's content predicts what comes next.

Written under `out_dir/raw/`: `interactions.csv` (user,item,time), `items.csv`
(item_id,title,description,image,video; media paths relative to items.csv), `media/` (mp4 videos,
PNG/JPEG covers) and `truth.json` (item topics, the transition matrix, topic words).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from vmr.errors import VmrError

SHAPES = ("circle", "square", "triangle", "cross", "ring", "star", "diamond", "bar")
MOTIONS = ("horizontal", "vertical", "orbit", "diagonal", "zigzag", "pulse", "spiral", "bounce")
THEMES = (
    ("ocean", "wave", "coral", "tide", "harbor", "sailor", "reef", "shell"),
    ("forest", "pine", "moss", "fern", "cedar", "trail", "acorn", "grove"),
    ("desert", "dune", "cactus", "sand", "mirage", "canyon", "camel", "oasis"),
    ("city", "tower", "subway", "neon", "avenue", "bridge", "taxi", "skyline"),
    ("kitchen", "spice", "bread", "oven", "recipe", "pepper", "honey", "butter"),
    ("space", "rocket", "planet", "comet", "orbit", "galaxy", "lunar", "nebula"),
    ("garden", "rose", "tulip", "petal", "bloom", "orchid", "lily", "daisy"),
    ("winter", "snow", "frost", "glacier", "sleigh", "icicle", "blizzard", "mitten"),
    ("music", "guitar", "rhythm", "melody", "drum", "violin", "chorus", "tempo"),
    ("sport", "soccer", "sprint", "racket", "goal", "stadium", "medal", "relay"),
    ("castle", "knight", "dragon", "throne", "armor", "banner", "moat", "quest"),
    ("robot", "circuit", "laser", "gadget", "sensor", "android", "servo", "chip"),
)
NOISE = ("new", "classic", "edition", "set", "pack", "deluxe", "mini", "pro", "daily",
         "original", "premium", "vintage", "limited", "bundle", "series", "collection", "plus",
         "essential", "select", "signature", "home", "studio", "travel", "gift")
SYLLABLES = ("ka", "lo", "mi", "ru", "te", "zo", "pa", "ne", "shi", "vu", "da", "fo")


@dataclass
class ItemLook:
    """Everything needed to draw one item's frames."""

    shape: str
    motion: str
    colour: tuple[int, int, int]  # BGR
    background: tuple[int, int, int]  # BGR
    radius: float
    speed: float  # cycles per video
    phase: float
    n_shapes: int
    texture: object  # uint8 array (size, size, 3), a static per-item noise pattern


def _hsv_to_bgr(h: float, s: float, v: float) -> tuple[int, int, int]:
    import cv2
    import numpy as np

    px = np.array([[[int(h) % 180, int(np.clip(s, 0, 255)), int(np.clip(v, 0, 255))]]],
                  dtype=np.uint8)
    b, g, r = cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def topic_words(n_topics: int, rng) -> list[list[str]]:
    """Eight words per topic: real themed words first, made-up words past the themed list."""
    words = [list(THEMES[t]) for t in range(min(n_topics, len(THEMES)))]
    used = {w for ws in words for w in ws} | set(NOISE)
    while len(words) < n_topics:
        group: list[str] = []
        while len(group) < 8:
            w = "".join(rng.choice(SYLLABLES, size=3))
            if w not in used:
                used.add(w)
                group.append(w)
        words.append(group)
    return words


def transition_matrix(n_topics: int, rng):
    """Row t: where users go after topic t. Mostly to a preferred successor topic, often staying,
    sometimes anywhere."""
    import numpy as np

    succ = rng.permutation(n_topics)
    for t in range(n_topics):  # a successor other than the topic itself
        if succ[t] == t:
            j = (t + 1) % n_topics
            succ[t], succ[j] = succ[j], succ[t]
    T = np.full((n_topics, n_topics), 0.2 / n_topics)
    T[np.arange(n_topics), np.arange(n_topics)] += 0.25
    T[np.arange(n_topics), succ] += 0.55
    return T / T.sum(1, keepdims=True)


def _position(look: ItemLook, t: float, size: int, k: int) -> tuple[float, float, float]:
    """Centre x, y and a size scale of shape k at video time t in [0, 1)."""
    c = size / 2.0
    a = size * 0.28
    w = 2 * math.pi * look.speed * t + look.phase + k * math.pi
    m = look.motion
    scale = 1.0
    if m == "horizontal":
        x, y = c + a * math.sin(w), c + (k - 0.5 * (look.n_shapes - 1)) * size * 0.3
    elif m == "vertical":
        x, y = c + (k - 0.5 * (look.n_shapes - 1)) * size * 0.3, c + a * math.sin(w)
    elif m == "orbit":
        x, y = c + a * math.cos(w), c + a * math.sin(w)
    elif m == "diagonal":
        x = y = c + a * math.sin(w)
    elif m == "zigzag":
        frac = (w / (2 * math.pi)) % 1.0
        x, y = c + a * (4 * abs(frac - 0.5) - 1), c + 0.5 * a * math.sin(4 * w)
    elif m == "pulse":
        x, y = c + (k - 0.5 * (look.n_shapes - 1)) * size * 0.3, c
        scale = 1.0 + 0.45 * math.sin(w)
    elif m == "spiral":
        r = a * (0.25 + 0.75 * ((w / (2 * math.pi)) % 1.0))
        x, y = c + r * math.cos(2 * w), c + r * math.sin(2 * w)
    else:  # bounce
        x, y = c + a * math.sin(0.5 * w), c + a * (1 - 2 * abs(math.sin(w)))
    return x, y, scale


def _polygon(shape: str, x: float, y: float, r: float, angle: float):
    import numpy as np

    if shape == "triangle":
        ang, rad = np.arange(3) * 2 * np.pi / 3, np.full(3, r)
    elif shape == "star":
        ang, rad = np.arange(10) * np.pi / 5, np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif shape == "diamond":
        ang, rad = np.arange(4) * np.pi / 2, np.array([r, 0.6 * r, r, 0.6 * r])
    elif shape == "bar":
        ang = np.array([0.25, np.pi - 0.25, np.pi + 0.25, -0.25])
        rad = np.full(4, r)
    else:  # square
        ang, rad = np.arange(4) * np.pi / 2 + np.pi / 4, np.full(4, r)
    pts = np.stack([x + rad * np.cos(ang + angle), y + rad * np.sin(ang + angle)], 1)
    return [np.round(pts).astype(np.int32)]


def render_frame(look: ItemLook, t: float, size: int):
    """One BGR uint8 frame of an item's video at time t in [0, 1)."""
    import cv2
    import numpy as np

    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = look.background
    img = cv2.add(img, look.texture)
    for k in range(look.n_shapes):
        x, y, scale = _position(look, t, size, k)
        r = max(2.0, look.radius * scale * (0.7 if k else 1.0))
        angle = 2 * math.pi * look.speed * t + look.phase
        if look.shape == "circle":
            cv2.circle(img, (round(x), round(y)), round(r), look.colour, -1, cv2.LINE_AA)
        elif look.shape == "ring":
            cv2.circle(img, (round(x), round(y)), round(r), look.colour, max(2, round(r / 3)),
                       cv2.LINE_AA)
        elif look.shape == "cross":
            for a in (angle, angle + math.pi / 2):
                dx, dy = r * math.cos(a), r * math.sin(a)
                cv2.line(img, (round(x - dx), round(y - dy)), (round(x + dx), round(y + dy)),
                         look.colour, max(2, round(r / 2.5)), cv2.LINE_AA)
        else:
            cv2.fillPoly(img, _polygon(look.shape, x, y, r, angle), look.colour, cv2.LINE_AA)
    return img


def _item_look(topic: int, n_topics: int, size: int, rng) -> ItemLook:
    import numpy as np

    hue = 180.0 * topic / n_topics
    colour = _hsv_to_bgr(hue + rng.uniform(-5, 5), 230 + rng.uniform(-20, 20),
                         235 + rng.uniform(-20, 20))
    background = _hsv_to_bgr(hue + 90 + rng.uniform(-5, 5), 120 + rng.uniform(-15, 15),
                             60 + rng.uniform(-15, 15))
    texture = (rng.random((size, size, 1)) * rng.uniform(10, 30)).astype(np.uint8)
    return ItemLook(
        shape=SHAPES[topic % len(SHAPES)],
        motion=MOTIONS[(3 * topic + topic // len(MOTIONS)) % len(MOTIONS)],
        colour=colour, background=background,
        radius=size * rng.uniform(0.11, 0.2), speed=rng.uniform(0.6, 1.4),
        phase=rng.uniform(0, 2 * math.pi), n_shapes=int(rng.integers(1, 3)),
        texture=np.repeat(texture, 3, axis=2),
    )


def _item_text(words: list[str], rng) -> tuple[str, str]:
    """A title (noise adjective + two topic words + noise noun) and a 10-16 word description
    (each word a topic word with probability 0.6, else a noise word)."""
    pick = rng.choice(words, size=2, replace=False)
    title = " ".join([str(rng.choice(NOISE)), *map(str, pick), str(rng.choice(NOISE))]).title()
    n = int(rng.integers(10, 17))
    desc = [str(rng.choice(words)) if rng.random() < 0.6 else str(rng.choice(NOISE))
            for _ in range(n)]
    return title, " ".join(desc).capitalize() + "."


def _write_video(path: Path, look: ItemLook, n_frames: int, fps: float, size: int) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                             (size, size))
    if not writer.isOpened():
        raise VmrError(f"{path}: OpenCV cannot write mp4v video here")
    try:
        for f in range(n_frames):
            writer.write(render_frame(look, f / n_frames, size))
    finally:
        writer.release()


def styles_fit(n_topics: int, n_styles: int) -> bool:
    """n_styles = 0, or a divisor of n_topics that leaves >= 2 styles and >= 2 themes."""
    return n_styles == 0 or (n_styles >= 2 and n_topics % n_styles == 0
                             and n_topics // n_styles >= 2)


def _check_arguments(n_items: int, n_users: int, n_topics: int, n_styles: int,
                     missing_rate: float, size: int, video_fps: int, video_seconds: float) -> None:
    """Refuse a catalogue that cannot be made (one line naming the bad argument)."""
    if not styles_fit(n_topics, n_styles):
        raise VmrError(f"n_styles must be 0 or a divisor of n_topics = {n_topics} that leaves "
                       f">= 2 styles and >= 2 themes (got {n_styles})")
    if n_topics < 2 or n_items < n_topics or n_users < 1:
        raise VmrError(f"synthetic catalogue needs n_topics >= 2, n_items >= n_topics and "
                       f"n_users >= 1 (got {n_topics}, {n_items}, {n_users})")
    if not 0.0 <= missing_rate <= 1.0:
        raise VmrError(f"missing_rate must be in [0, 1], got {missing_rate}")
    if size < 16 or video_fps <= 0 or video_seconds <= 0:
        raise VmrError("synthetic videos need size >= 16 and positive fps and seconds")


@dataclass
class _Catalogue:
    """The planted structure: topic words, topic transitions, each item's topic and id, and
    which modality (if any) each item lacks."""

    words: list[list[str]]
    transition: object  # float array [n_topics, n_topics]
    topics: object  # int array [n_items]
    item_ids: list[str]
    missing: object  # object array [n_items]: "", "video", "image" or "text"


def _plan_catalogue(n_items: int, n_topics: int, n_themes: int, missing_rate: float,
                    rng) -> _Catalogue:
    """Draw the catalogue's structure from `rng` (the items' generator)."""
    import numpy as np

    words = topic_words(n_themes, rng)
    T = transition_matrix(n_topics, rng)
    topics = rng.permutation(np.arange(n_items) % n_topics)  # balanced, ids hide topics
    iw = max(4, len(str(n_items - 1)))
    item_ids = [f"v{k:0{iw}d}" for k in range(n_items)]
    n_missing = int(round(missing_rate * n_items))
    missing = np.full(n_items, "", dtype=object)
    missing[rng.choice(n_items, size=n_missing, replace=False)] = rng.choice(
        ["video", "image", "text"], size=n_missing)
    return _Catalogue(words, T, topics, item_ids, missing)


def _write_items(root: Path, cat: _Catalogue, n_styles: int, n_looks: int, size: int,
                 n_frames: int, video_fps: int, rng, progress: bool) -> None:
    """Draw each item's media and text and write them with `items.csv`."""
    import cv2
    from tqdm import tqdm

    rows = []
    for k in tqdm(range(len(cat.item_ids)), desc="synthetic items", unit="item",
                  disable=not progress, leave=False):
        topic = int(cat.topics[k])
        style, theme = (topic % n_styles, topic // n_styles) if n_styles else (topic, topic)
        look = _item_look(style, n_looks, size, rng)
        title, desc = _item_text(cat.words[theme], rng)
        still_t = float(rng.uniform(0, 1))
        ext = ".jpg" if k % 4 == 3 else ".png"
        image = video = ""
        if cat.missing[k] != "video":
            video = f"media/{cat.item_ids[k]}.mp4"
            _write_video(root / video, look, n_frames, video_fps, size)
        if cat.missing[k] != "image":
            image = f"media/{cat.item_ids[k]}{ext}"
            cv2.imwrite(str(root / image), render_frame(look, still_t, size))
        if cat.missing[k] == "text":
            title = desc = ""
        rows.append((cat.item_ids[k], title, desc, image, video))
    with open(root / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "description", "image", "video"])
        w.writerows(rows)


def _write_interactions(root: Path, cat: _Catalogue, n_users: int, rng_items, rng_users) -> None:
    """Users: a topic walk on the transition matrix, popularity-weighted items inside a topic,
    no repeats; written as `interactions.csv`, a global log in time order."""
    import numpy as np

    n_topics = len(cat.transition)
    members = [np.flatnonzero(cat.topics == t) for t in range(n_topics)]
    pop = [(rng_items.permutation(len(m)) + 1.0) ** -0.7 for m in members]
    uw = max(5, len(str(n_users - 1)))
    events = []
    t0 = 1_600_000_000
    for u in range(n_users):
        user = f"u{u:0{uw}d}"
        length = int(rng_users.integers(5, 21))
        topic = int(rng_users.integers(n_topics))
        clock = t0 + int(rng_users.integers(0, 180 * 86400))
        seen: set[int] = set()
        for _ in range(length):
            cand, p = members[topic], pop[topic].copy()
            p[[j for j, it in enumerate(cand) if it in seen]] = 0.0
            if p.sum() == 0:
                p = pop[topic].copy()
            item = int(rng_users.choice(cand, p=p / p.sum()))
            seen.add(item)
            events.append((clock, user, cat.item_ids[item]))
            clock += 1 + int(rng_users.exponential(86400))
            topic = int(rng_users.choice(n_topics, p=cat.transition[topic]))
    events.sort(key=lambda e: (e[0], e[1]))  # a global log in time order
    with open(root / "interactions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "time"])
        w.writerows((user, item, clock) for clock, user, item in events)


def _write_truth(root: Path, cat: _Catalogue, seed: int, n_styles: int, n_looks: int) -> None:
    """`truth.json`: item topics, missing modalities, the transition matrix, topic words, looks."""
    import numpy as np

    ids = cat.item_ids
    truth = {
        "seed": seed, "n_topics": len(cat.transition), "n_styles": n_styles,
        "item_topic": {ids[k]: int(cat.topics[k]) for k in range(len(ids))},
        "missing": {ids[k]: str(cat.missing[k]) for k in range(len(ids)) if cat.missing[k]},
        "transition": np.round(cat.transition, 6).tolist(), "topic_words": cat.words,
        "shapes": [SHAPES[t % len(SHAPES)] for t in range(n_looks)],
        "motions": [MOTIONS[(3 * t + t // len(MOTIONS)) % len(MOTIONS)] for t in range(n_looks)],
    }
    (root / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")


def generate_catalogue(out_dir: str | Path, n_items: int = 240, n_users: int = 1200,
                       n_topics: int = 8, seed: int = 0, video_seconds: float = 3.0,
                       video_fps: int = 8, size: int = 64, missing_rate: float = 0.1,
                       progress: bool = True, n_styles: int = 0) -> dict[str, str]:
    """Write the synthetic catalogue under `out_dir/raw/`; returns the paths written
    (`root`, `interactions`, `items`, `media`, `truth`). Same seed -> same files.

    n_styles = 0: every topic has its own look and its own words, so any one modality reveals
    the topic. n_styles = S > 0 (n_topics a multiple of S): topic t = (style t % S, theme t // S);
    the pictures (video, cover) show only the style and the text only the theme, so no single
    modality tells the topic -- and the next topic -- that the modalities give together."""
    import numpy as np

    _check_arguments(n_items, n_users, n_topics, n_styles, missing_rate, size, video_fps,
                     video_seconds)
    root = Path(out_dir).expanduser() / "raw"
    media = root / "media"
    try:
        media.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VmrError(f"{out_dir}: cannot create {media}: {e.strerror or e}") from None

    rng_items = np.random.default_rng([seed, 1])
    rng_users = np.random.default_rng([seed, 2])
    n_looks = n_styles or n_topics                    # pictures: one look per style
    n_themes = n_topics // n_styles if n_styles else n_topics
    cat = _plan_catalogue(n_items, n_topics, n_themes, missing_rate, rng_items)
    n_frames = max(1, int(round(video_seconds * video_fps)))
    _write_items(root, cat, n_styles, n_looks, size, n_frames, video_fps, rng_items, progress)
    _write_interactions(root, cat, n_users, rng_items, rng_users)
    _write_truth(root, cat, seed, n_styles, n_looks)
    return {"root": str(root), "interactions": str(root / "interactions.csv"),
            "items": str(root / "items.csv"), "media": str(media),
            "truth": str(root / "truth.json")}
