"""The demo's ordering check (vmr.demo.ordering): the best single modality is chosen on
validation, and a gap counts only when it is larger than 2 std."""

import json

from vmr.demo import ordering


def _runs(tmp_path, rows: dict) -> list:
    """rows: label -> [(test NDCG@10, valid NDCG@10) per seed] -> run dirs label-s<seed>."""
    paths = []
    for label, per_seed in rows.items():
        for s, (test, valid) in enumerate(per_seed, 1):
            p = tmp_path / f"{label}-s{s}"
            p.mkdir()
            (p / "metrics_test.json").write_text(json.dumps({"NDCG@10": test}))
            (p / "run.json").write_text(json.dumps({"best_valid": {"NDCG@10": valid}}))
            paths.append(p)
    return paths


def test_clear_ordering_and_single_modality_chosen_on_validation(tmp_path):
    rows = {"vmr": [(0.30, 0.3), (0.31, 0.3), (0.30, 0.3)],
            "vmr-video": [(0.25, 0.20), (0.25, 0.20), (0.26, 0.20)],
            # the best on test, but not on validation: must not be the one compared
            "vmr-image": [(0.29, 0.10), (0.29, 0.10), (0.29, 0.10)],
            "vmr-text": [(0.20, 0.15), (0.20, 0.15), (0.20, 0.15)],
            "sasrec": [(0.15, 0.1), (0.16, 0.1), (0.15, 0.1)],
            "popularity": [(0.05, 0.0)] * 3}
    out = ordering(_runs(tmp_path, rows))
    assert "best single modality (video, chosen on validation)" in out
    assert out.count("-> clear") == 3 and out.endswith("every gap larger than 2 std: yes")


def test_a_gap_within_noise_is_not_clear(tmp_path):
    rows = {"vmr": [(0.30, 0.3), (0.20, 0.3), (0.25, 0.3)],     # std 0.05
            "vmr-video": [(0.24, 0.2)] * 3, "vmr-image": [(0.1, 0.1)] * 3,
            "vmr-text": [(0.1, 0.1)] * 3, "sasrec": [(0.15, 0.1)] * 3,
            "popularity": [(0.05, 0.0)] * 3}
    out = ordering(_runs(tmp_path, rows))
    assert "vmr > vmr-video: gap +0.0100, 2 std 0.1000 -> NOT clear" in out
    assert out.endswith("every gap larger than 2 std: no")


def test_one_seed_tests_nothing(tmp_path):
    rows = {k: [(v, v)] for k, v in (("vmr", 0.3), ("vmr-video", 0.2), ("vmr-image", 0.1),
                                     ("vmr-text", 0.1), ("sasrec", 0.05), ("popularity", 0.01))}
    out = ordering(_runs(tmp_path, rows))
    assert out.count("one seed: not tested") == 3 and out.endswith("no")


def test_demo_refuses_styles_that_do_not_divide_topics(tmp_path):
    from helpers import cli_one_line

    line = cli_one_line("demo", "--topics", "10", "--styles", "4", "--out", tmp_path / "d")
    assert "--styles 4" in line and "--topics 10" in line
    assert not (tmp_path / "d").exists()                 # refused before any work
