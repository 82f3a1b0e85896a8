"""Paired comparison of two per-case scorings (``brainseg3d cv compare``) on hand-made CSVs."""

import csv
import json

import pytest

from brainseg3d.cli import main
from brainseg3d.evaluation.paired import bootstrap_ci, format_comparison, paired_comparison, read_scores


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["case", "source", "fold", "Dice_WT", "Dice_TC", "Dice_ET", "HD95_WT", "HD95_TC", "HD95_ET"])
        w.writeheader()
        for case, source, wt, tc, et in rows:
            w.writerow({"case": case, "source": source, "fold": 0, "Dice_WT": wt, "Dice_TC": tc, "Dice_ET": et,
                        "HD95_WT": 10 * (1 - wt), "HD95_TC": 10 * (1 - tc), "HD95_ET": 10 * (1 - et)})
    return path


@pytest.fixture
def records(tmp_path):
    a = _write(tmp_path / "a.csv", [("c1", "adult", 0.8, 0.6, 0.5), ("c2", "adult", 0.9, 0.7, 0.6),
                                    ("c3", "africa", 0.7, 0.5, 0.4), ("c4", "africa", 0.6, 0.4, 0.3),
                                    ("only_a", "adult", 0.1, 0.1, 0.1)])
    b = _write(tmp_path / "b.csv", [("c1", "adult", 0.9, 0.6, 0.4), ("c2", "adult", 1.0, 0.702, 0.5),
                                    ("c3", "africa", 0.8, 0.6, 0.3), ("c4", "africa", 0.7, 0.3, 0.2),
                                    ("only_b", "africa", 0.9, 0.9, 0.9)])
    return a, b


def test_known_paired_differences(records):
    """Means, paired differences and counts on the common cases, per source; lone cases left out."""
    res = paired_comparison(*records, n_boot=2000)
    assert res["n_common"] == 4 and res["only_a"] == ["only_a"] and res["only_b"] == ["only_b"]
    wt = res["groups"]["all"]["WT"]
    assert wt["mean_a"] == pytest.approx(0.75) and wt["mean_b"] == pytest.approx(0.85) and wt["diff"] == pytest.approx(0.1)
    assert wt["ci95"] == pytest.approx([0.1, 0.1])  # every case gained exactly 0.1: no spread
    assert (wt["better"], wt["worse"], wt["same"]) == (4, 0, 0)
    tc = res["groups"]["all"]["TC"]  # 0, +0.002 (within the tie), +0.1, -0.1
    assert tc["diff"] == pytest.approx(0.0005) and (tc["better"], tc["worse"], tc["same"]) == (1, 1, 2)
    assert tc["ci95"][0] < 0 < tc["ci95"][1]  # a gain that the cases do not support
    et = res["groups"]["africa"]["ET"]
    assert et["n"] == 2 and et["diff"] == pytest.approx(-0.1) and (et["better"], et["worse"]) == (0, 2)
    assert set(res["groups"]) == {"all", "adult", "africa"}
    assert paired_comparison(*records, n_boot=2000) == res  # deterministic
    text = format_comparison(res)
    assert "| all | WT | 4 | 0.750 | 0.850 | +0.100 | [+0.100, +0.100] | 4 / 0 / 0 |" in text
    assert "only_a" in text and "only_b" in text


def test_hd95_lower_is_better(records):
    """For HD95 a smaller distance counts as better (differences are still B - A)."""
    wt = paired_comparison(*records, metric="HD95", n_boot=200)["groups"]["all"]["WT"]
    assert wt["diff"] == pytest.approx(-1.0) and wt["better"] == 4


def test_error_rows_and_bad_files(tmp_path, records):
    """Error rows are skipped; a file that is not a score table, or shares no case, is a clear error."""
    a, _ = records
    with open(a, "a") as f:
        f.write("broken,adult,0,,,,,,\n")
    assert "broken" not in read_scores(a) and len(read_scores(a)) == 5
    other = _write(tmp_path / "other.csv", [("x", "adult", 0.5, 0.5, 0.5)])
    with pytest.raises(ValueError, match="share no scored case"):
        paired_comparison(a, other)
    bad = tmp_path / "bad.csv"
    bad.write_text("case,Dice\nc1,0.5\n")
    with pytest.raises(ValueError, match=r"bad.csv: not a per-case score file \(missing column\(s\) Dice_WT"):
        read_scores(bad)


def test_cv_compare_command(tmp_path, records, capsys):
    """`cv compare` reads record folders (cv.csv, or cv_raw.csv with --raw) and CSVs; errors exit 2."""
    a, b = records
    ra, rb = tmp_path / "ra", tmp_path / "rb"
    for folder, src in ((ra, a), (rb, b)):
        folder.mkdir()
        (folder / "cv_raw.csv").write_text(src.read_text())
    assert main(["cv", "compare", str(ra), str(rb), "--raw", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| all | WT | 4 | 0.750 | 0.850 | +0.100 |" in out
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert saved["groups"]["adult"]["WT"]["n"] == 2 and (tmp_path / "cmp.md").read_text().startswith("B = ")
    assert main(["cv", "compare", str(ra), str(rb)]) == 2  # no cv.csv in the folders
    assert "cv.csv" in capsys.readouterr().err


def test_bootstrap_ci_of_known_differences():
    """A constant difference is its own interval; a spread one brackets its mean, the same for a seed."""
    import numpy as np

    assert bootstrap_ci(np.full(12, 0.03)) == pytest.approx((0.03, 0.03))
    d = np.array([-0.02, 0.0, 0.01, 0.05, 0.08, -0.01, 0.03, 0.02])
    lo, hi = bootstrap_ci(d, 2000, 1)
    assert lo < d.mean() < hi and (lo, hi) == bootstrap_ci(d, 2000, 1)
    assert bootstrap_ci(np.array([0.2])) == (0.2, 0.2)
