"""The test helpers themselves write what the code reads."""

from helpers.media import write_dataset


def test_helpers_write_a_readable_dataset(tmp_path):
    from vmr.extract.items import load_items

    d = write_dataset(tmp_path / "ds", ["007", "7"], text=["a", None])
    t = load_items(d)
    assert t.ids == ["007", "7"] and t.text == ["a", None] and t.video == [None, None]
