"""Which columns hold the user, the item, the time and the rating: named by a flag, else looked
up among the usual names (or a --preset's names). An exact name wins over a name that differs
only in case. RecBole's `name:type` headers arrive here already stripped of `:type`."""

from __future__ import annotations

from vmr.errors import VmrError

COMMON = {
    "user": ("user_id", "userId", "reviewerID", "user"),
    "item": ("item_id", "itemId", "movieId", "asin", "item"),
    "time": ("timestamp", "unixReviewTime", "time", "ts"),
    "rating": ("rating", "overall"),
    "items_id": ("item_id", "itemId", "movieId", "asin", "item"),
}
PRESETS = {
    "movielens": {
        "user": ("userId", "user_id"), "item": ("movieId", "item_id"), "time": ("timestamp",),
        "rating": ("rating",), "items_id": ("movieId", "item_id"), "text": ("title", "genres"),
    },
    "amazon": {
        "user": ("reviewerID", "user_id"), "item": ("asin", "parent_asin"),
        "time": ("unixReviewTime", "timestamp"), "rating": ("overall", "rating"),
        "items_id": ("asin", "parent_asin"), "text": ("title", "brand", "categories"),
    },
    "recbole": {
        "user": ("user_id",), "item": ("item_id",), "time": ("timestamp",),
        "rating": ("rating",), "items_id": ("item_id",), "text": ("title", "brand", "categories"),
    },
}
FLAGS = {"user": "--user-col", "item": "--item-col", "time": "--time-col",
         "rating": "--rating-col", "items_id": "--items-id-col"}


def check_preset(preset: str | None) -> None:
    if preset is not None and preset not in PRESETS:
        raise VmrError(f"--preset must be one of {', '.join(PRESETS)}, got '{preset}'")


def candidates(role: str, preset: str | None) -> tuple[str, ...]:
    return PRESETS[preset][role] if preset else COMMON[role]


def find(columns, names, shown=None) -> str | None:
    """The first of `names` among `columns`; failing that, the one equal up to case. Two
    columns that differ only in case (`User_ID`, `USER_ID`) where one of `names` matches are
    ambiguous: a VmrError asks for the column by name, never a silent pick."""
    lower: dict[str, list[str]] = {}
    for c in columns:
        lower.setdefault(c.lower(), []).append(c)
    for n in names:
        same = lower.get(n.lower(), [])
        if len(same) > 1:
            raise VmrError(f"{str(shown) + ': ' if shown else ''}columns "
                           f"{', '.join(repr(c) for c in same)} differ only in case; "
                           "name the one meant with its flag (e.g. --user-col, --item-col)")
    for n in names:
        if n in columns:
            return n
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()][0]
    return None


def resolve(role: str, given: str | None, columns, preset: str | None, shown,
            what: str) -> tuple[str, str]:
    """(column, how) for a role: `how` is 'given', 'detected' or 'PRESET preset'.

    A given name is returned unchecked (the caller checks it after reading); without one the
    role's usual names are looked up, and a VmrError lists them and the file's columns."""
    if given:
        return given, "given"
    names = candidates(role, preset)
    found = find(columns, names, shown)
    if found is None:
        via = f" (--preset {preset})" if preset else ""
        shown_cols = ", ".join(columns) if columns else "none"
        raise VmrError(f"{shown}: no {role.replace('items_id', 'item id')} column in the {what}: "
                       f"none of {', '.join(names)}{via}; name it with {FLAGS[role]} "
                       f"(columns: {shown_cols})")
    return found, (f"{preset} preset" if preset else "detected")


def preset_text_columns(preset: str | None, columns) -> list[str]:
    """The preset's item text columns that the items table has, in the preset's order."""
    if not preset:
        return []
    return [c for c in (find(columns, [n]) for n in PRESETS[preset]["text"]) if c]


def describe(picked: dict[str, tuple[str, str]]) -> str:
    """`user 'reviewerID', item 'asin' (detected), time 'ts' (given)`: roles that were chosen
    the same way are listed together, then how."""
    names = {"items_id": "id", "text": "text"}
    parts: list[str] = []
    group: list[str] = []
    for k, (role, (col, how)) in enumerate(picked.items()):
        group.append(f"{names.get(role, role)} '{col}'")
        nxt = list(picked.values())[k + 1][1] if k + 1 < len(picked) else None
        if nxt != how:
            parts.append(", ".join(group) + f" ({how})")
            group = []
    return ", ".join(parts)
