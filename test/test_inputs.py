from pathlib import Path

import pytest

from maximask.errors import MaximaskError
from maximask.inputs import Task, expand, is_fits_name, is_own_output, output_name, output_path, split_hdu


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("a.fits[0]", ("a.fits", 0)),
        ("dir/a.fits.fz[12]", ("dir/a.fits.fz", 12)),
        ("a.fits", ("a.fits", None)),
        ("a.fits[x]", ("a.fits[x]", None)),
        ("a.fits[]", ("a.fits[]", None)),
    ],
)
def test_split_hdu(spec, expected):
    assert split_hdu(spec) == expected


def test_split_hdu_prefers_an_existing_file_named_with_brackets(tmp_path):
    odd = tmp_path / "odd[3]"
    odd.write_bytes(b"")
    assert split_hdu(str(odd)) == (str(odd), None)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.fits", True), ("a.FITS", True), ("a.fit", True), ("a.fts", True),
        ("a.fits.fz", True), ("a.fits.gz", True), ("a.fz", True), ("a.fit.gz", True),
        ("a.gz", False), ("a.txt", False), ("a.list", False), ("fits", False),
    ],
)
def test_is_fits_name(name, expected):
    assert is_fits_name(name) is expected


@pytest.mark.parametrize(
    "name, expected",
    [("a.masks.fits", True), ("a.masks12.fits", True), ("a.fits", False), ("masks.fits", False), ("a.masksx.fits", False)],
)
def test_is_own_output(name, expected):
    assert is_own_output(name) is expected


@pytest.mark.parametrize(
    "name, hdu, expected",
    [
        ("a.fits", None, "a.masks.fits"),
        ("a.fits", 3, "a.masks3.fits"),
        ("a.fits.fz", None, "a.masks.fits"),
        ("a.fits.gz", 0, "a.masks0.fits"),
        ("a.fit", None, "a.masks.fits"),
        ("a.FTS", None, "a.masks.fits"),
        ("a.fz", None, "a.masks.fits"),
        ("image", None, "image.masks.fits"),
        ("dir/b.c.fits", None, "b.c.masks.fits"),
    ],
)
def test_output_name(name, hdu, expected):
    assert output_name(name, hdu) == expected


def test_output_path_next_to_input_or_in_out_dir(tmp_path):
    task = Task(tmp_path / "sub" / "a.fits.fz", 2, "x")
    assert output_path(task) == tmp_path / "sub" / "a.masks2.fits"
    assert output_path(task, tmp_path / "out") == tmp_path / "out" / "a.masks2.fits"


def test_expand_single_file_and_hdu(tmp_path):
    f = tmp_path / "a.fits"
    assert expand(str(f)) == [Task(f, None, str(f))]
    assert expand(f"{f}[2]") == [Task(f, 2, f"{f}[2]")]


def test_expand_missing_file_gives_a_task_that_fails_later(tmp_path):
    f = tmp_path / "missing.fits"
    assert expand(str(f)) == [Task(f, None, str(f))]


def test_expand_directory_sorted_fits_only_without_our_outputs(tmp_path):
    names = ["b.fits", "a.fits.fz", "c.fit", "d.fits.gz", "a.masks.fits", "a.masks3.fits", "notes.txt", ".hidden.fits",
             ".a.masks.fits.x1.part"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "sub.fits").mkdir()
    tasks = expand(str(tmp_path))
    assert [t.path.name for t in tasks] == ["a.fits.fz", "b.fits", "c.fit", "d.fits.gz"]
    assert all(t.hdu is None for t in tasks)


def test_expand_empty_directory_is_an_error(tmp_path):
    (tmp_path / "a.masks.fits").write_bytes(b"")
    with pytest.raises(MaximaskError) as e:
        expand(str(tmp_path))
    assert e.value.path == str(tmp_path)
    assert "no FITS file" in e.value.reason


def test_expand_list_with_hdus_comments_blank_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.fits").write_bytes(b"")
    lst = tmp_path / "in.list"
    lst.write_text(f"# comment\n\na.fits[1]\n  {tmp_path}/b.fits  \n\n# another\nc.fits.fz\n")
    tasks = expand(str(lst))
    assert tasks == [
        Task(Path("a.fits"), 1, "a.fits[1]"),
        Task(tmp_path / "b.fits", None, f"{tmp_path}/b.fits"),
        Task(Path("c.fits.fz"), None, "c.fits.fz"),
    ]


def test_list_entries_found_next_to_the_list_when_not_in_working_directory(tmp_path, monkeypatch):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "a.fits").write_bytes(b"")
    lst = tmp_path / "lists" / "in.list"
    lst.write_text("a.fits[0]\nmissing.fits\n")
    monkeypatch.chdir(tmp_path)
    tasks = expand(str(lst))
    assert tasks[0] == Task(tmp_path / "lists" / "a.fits", 0, str(tmp_path / "lists" / "a.fits[0]"))
    assert tasks[1] == Task(Path("missing.fits"), None, "missing.fits")


@pytest.mark.parametrize("content, reason", [(None, "no such file"), ("\n# only comments\n\n", "names no input")])
def test_bad_list_file(tmp_path, content, reason):
    lst = tmp_path / "in.list"
    if content is not None:
        lst.write_text(content)
    with pytest.raises(MaximaskError) as e:
        expand(str(lst))
    assert e.value.path == str(lst)
    assert reason in e.value.reason
