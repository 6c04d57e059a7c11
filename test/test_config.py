import numpy as np
import pytest

from maximask.classes import ABBRS
from maximask.config import load_config, read_flags, read_priors, read_thresholds
from maximask.errors import UsageError
from maximask.resources import default_config_dir


def write(path, values, names=ABBRS):
    path.write_text("".join(f"{n} {v}\n" for n, v in zip(names, values)))
    return path


def test_bundled_configs_are_valid():
    cfg = load_config(default_config_dir())
    assert cfg.flags.shape == (14,) and cfg.flags.dtype == bool
    assert cfg.priors.shape == (14,) and np.all((cfg.priors > 0) & (cfg.priors < 1))
    assert cfg.thresholds.shape == (14,) and np.all((cfg.thresholds >= 0) & (cfg.thresholds <= 1))


def test_values_are_read_in_order_and_names_are_not_checked(tmp_path):
    # MaxiMask's own files call trails STL: only the order matters
    names = list(ABBRS)
    names[6] = "STL"
    priors = [1e-6, 0.5, 0.25] + [0.01] * 11
    got = read_priors(write(tmp_path / "classes.priors", priors, names))
    assert got.tolist() == priors


def test_flags_blank_lines_and_comments_are_ignored(tmp_path):
    p = tmp_path / "classes.flags"
    lines = [f"{a} {int(i % 2 == 0)}" for i, a in enumerate(ABBRS)]
    p.write_text("# my flags\n\n" + "\n".join(lines[:7]) + "\n\n" + "\n".join(lines[7:]) + "\n")
    assert read_flags(p).tolist() == [i % 2 == 0 for i in range(14)]


@pytest.mark.parametrize("t", [0, 1, 0.0, 1.0, 0.123456789012345678])
def test_threshold_bounds_are_inclusive(tmp_path, t):
    assert read_thresholds(write(tmp_path / "classes.thresh", [t] * 14))[0] == float(t)


@pytest.mark.parametrize(
    "reader, values, lineno, words",
    [
        (read_thresholds, [0.5] * 13, None, "expected 14"),
        (read_thresholds, [0.5] * 15, None, "expected 14"),
        (read_thresholds, [0.5] * 3 + ["abc"] + [0.5] * 10, 4, "not a number"),
        (read_thresholds, [0.5] * 13 + [1.5], 14, "outside [0, 1]"),
        (read_thresholds, [-0.1] + [0.5] * 13, 1, "outside [0, 1]"),
        (read_thresholds, ["nan"] + [0.5] * 13, 1, "outside"),
        (read_priors, [0.0] + [0.5] * 13, 1, "outside (0, 1)"),
        (read_priors, [0.5] * 2 + [1] + [0.5] * 11, 3, "outside (0, 1)"),
        (read_priors, [0.5] * 5 + ["1e-3x"] + [0.5] * 8, 6, "not a number"),
        (read_flags, [1] * 13 + [2], 14, "0 or 1"),
        (read_flags, [1] * 13 + ["yes"], 14, "0 or 1"),
        (read_flags, [0] * 14, None, "no class flagged"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, reader, values, lineno, words):
    names = list(ABBRS) + ["XX"] * 5
    p = write(tmp_path / "classes.x", values, names)
    with pytest.raises(UsageError) as e:
        reader(p)
    assert e.value.path == str(p)
    assert words in e.value.reason
    if lineno is not None:
        assert e.value.reason.startswith(f"line {lineno}:")


def test_line_with_three_columns_is_an_error(tmp_path):
    p = write(tmp_path / "classes.flags", [1] * 14)
    p.write_text(p.read_text().replace("HP 1", "HP 1 extra"))
    with pytest.raises(UsageError, match="line 4: expected 'ABBR value'"):
        read_flags(p)


def test_load_config_reads_only_what_the_run_needs(tmp_path):
    write(tmp_path / "classes.flags", [1] * 14)
    cfg = load_config(tmp_path, prior_modif=False, proba_thresh=False)
    assert cfg.priors is None and cfg.thresholds is None and cfg.flags.all()
    with pytest.raises(UsageError) as e:
        load_config(tmp_path, prior_modif=True, proba_thresh=False)
    assert e.value.path == str(tmp_path / "classes.priors")
    assert "not found" in e.value.reason


def test_missing_config_dir(tmp_path):
    with pytest.raises(UsageError, match="configuration directory not found"):
        load_config(tmp_path / "nope")
