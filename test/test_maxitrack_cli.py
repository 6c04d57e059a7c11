"""The maxitrack command contract, with a tiny fixture network built here (not the shipped one).

The fixture network's logit is ``GAIN * mean(normalised tile)``: bright, crowded tiles score high,
empty sky scores ~0.5 at the training prior, so that results can be predicted and compared.
"""

from __future__ import annotations

import math

import fitsio
import numpy as np
import pytest

from maxitrack import cli
from maxitrack.scoring import logit

TILE = 32
GAIN = 0.5


@pytest.fixture(scope="session")
def net_dir(tmp_path_factory):
    keras = pytest.importorskip("keras")
    from maximask.network import NetworkMetadata, save_network
    from maxitrack.tiles import tile_normalisation

    inp = keras.Input((TILE, TILE, 1))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(1)(x)
    model = keras.Model(inp, out)
    model.layers[-1].set_weights([np.array([[GAIN]], np.float32), np.zeros(1, np.float32)])
    d = tmp_path_factory.mktemp("net") / "maxitrack"
    meta = NetworkMetadata(
        name="maxitrack",
        classes=["TRACKING_ERROR"],
        training_priors=[0.3],
        margin=0,
        tile_size=TILE,
        size_multiple=1,
        normalisation=tile_normalisation(TILE),
        extra={"tiles": {"n_tiles": 3}},
    )
    save_network(model, d, meta)
    return d


def frame(seed: int, shape=(96, 128), n_stars=20) -> np.ndarray:
    """Noise on a sky level with Gaussian stars (float32)."""
    rng = np.random.default_rng(seed)
    im = rng.normal(500.0, 10.0, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(n_stars):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        im += rng.uniform(200, 3000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    return im.astype(np.float32)


def write_fits(path, images, table=False):
    """A FITS file with an empty primary HDU followed by ``images`` (2D or 3D arrays)."""
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None)
        for im in images:
            f.write(im)
        if table:
            f.write(np.zeros(3, dtype=[("a", "f4")]))
    return path


def run(args, net_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return cli.main([*map(str, args), "--net_dir", str(net_dir), "-q"])


def read_out(path):
    return [line.split() for line in path.read_text().splitlines()]


def test_one_line_per_file_appended_to_maxitrack_out(net_dir, tmp_path, monkeypatch):
    f = write_fits(tmp_path / "a.fits", [frame(1), frame(2)], table=True)
    assert run([f], net_dir, tmp_path, monkeypatch) == 0
    assert run([f], net_dir, tmp_path, monkeypatch) == 0
    lines = read_out(tmp_path / "maxitrack.out")
    assert len(lines) == 2 and lines[0] == lines[1]
    assert lines[0][0] == str(f)
    assert 0.0 <= float(lines[0][1]) <= 1.0


def test_output_option_and_hdu_selector(net_dir, tmp_path, monkeypatch):
    f = write_fits(tmp_path / "a.fits", [frame(1), frame(2, n_stars=0)])
    out = tmp_path / "sub" / "res.txt"
    out.parent.mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.main([f"{f}[1]", f"{f}[2]", "-o", str(out), "--net_dir", str(net_dir), "-q"]) == 0
    lines = read_out(out)
    assert [line[0] for line in lines] == [f"{f}[1]", f"{f}[2]"]
    # the crowded HDU scores higher than the empty one
    assert float(lines[0][1]) > float(lines[1][1])
    assert not (tmp_path / "maxitrack.out").exists()


def test_field_score_is_mean_of_tile_logits_over_hdus(net_dir, tmp_path, monkeypatch):
    from maxitrack.scoring import sigmoid
    from maximask.network import Network
    from maxitrack.tiles import prepare_tiles

    ims = [frame(1), frame(2, n_stars=3), frame(3, n_stars=40)]
    f = write_fits(tmp_path / "m.fits", ims)
    assert run([f, "--prior", "0.3"], net_dir, tmp_path, monkeypatch) == 0
    (line,) = read_out(tmp_path / "maxitrack.out")
    net = Network(net_dir)
    z = np.concatenate([net.predict_logits(prepare_tiles(im, TILE, {"n_tiles": 3}))[:, 0] for im in ims])
    # the prior equals the training prior: no shift
    assert float(line[1]) == pytest.approx(float(sigmoid(z.mean())), abs=2e-6)


def test_prior_shifts_the_logit(net_dir, tmp_path, monkeypatch):
    f = write_fits(tmp_path / "a.fits", [frame(4)])
    scores = {}
    for prior in (0.05, 0.3, 0.8):
        out = tmp_path / f"p{prior}.out"
        monkeypatch.chdir(tmp_path)
        assert cli.main([str(f), "--prior", str(prior), "-o", str(out), "--net_dir", str(net_dir), "-q"]) == 0
        scores[prior] = float(read_out(out)[0][1])
    for prior in (0.05, 0.8):
        shift = logit(scores[prior]) - logit(scores[0.3])
        assert shift == pytest.approx(logit(prior) - logit(0.3), abs=1e-3)


def test_cube_gives_one_line_per_plane(net_dir, tmp_path, monkeypatch):
    cube = np.stack([frame(5), frame(6, n_stars=0), frame(7)])
    f = write_fits(tmp_path / "c.fits", [frame(8), cube])
    assert run([f], net_dir, tmp_path, monkeypatch) == 0
    lines = read_out(tmp_path / "maxitrack.out")
    assert len(lines) == 4
    assert lines[0][0] == str(f) and len(lines[0]) == 2
    for c, line in enumerate(lines[1:]):
        assert line[:5] == [str(f), "HDU", "2", "Channel", str(c)]
        assert 0.0 <= float(line[5]) <= 1.0
    # a plane scores like the same pixels in a 2D HDU
    g = write_fits(tmp_path / "g.fits", [frame(5)])
    assert run([g], net_dir, tmp_path, monkeypatch) == 0
    assert read_out(tmp_path / "maxitrack.out")[-1][1] == lines[1][5]


def test_directory_and_list(net_dir, tmp_path, monkeypatch):
    d = tmp_path / "d"
    d.mkdir()
    a = write_fits(d / "a.fits", [frame(1)])
    b = write_fits(d / "b.fits", [frame(2)])
    write_fits(d / "a.masks.fits", [frame(3)])  # maximask output: skipped
    assert run([d], net_dir, tmp_path, monkeypatch) == 0
    assert [line[0] for line in read_out(tmp_path / "maxitrack.out")] == [str(a), str(b)]
    lst = tmp_path / "in.list"
    lst.write_text(f"# inputs\n{b}\n\n{a}[1]\n")
    (tmp_path / "maxitrack.out").unlink()
    assert run([lst], net_dir, tmp_path, monkeypatch) == 0
    assert [line[0] for line in read_out(tmp_path / "maxitrack.out")] == [str(b), f"{a}[1]"]


def test_frac_uses_at_least_one_hdu_reproducibly(net_dir, tmp_path, monkeypatch):
    ims = [frame(10 + i, n_stars=5 * i) for i in range(4)]
    f = write_fits(tmp_path / "m.fits", ims)
    singles = []
    for h in range(1, 5):
        assert run([f"{f}[{h}]"], net_dir, tmp_path, monkeypatch) == 0
        singles.append(read_out(tmp_path / "maxitrack.out")[-1][1])
    assert len(set(singles)) == 4
    for _ in range(2):
        assert run([f, "--frac", "0.01", "--seed", "7"], net_dir, tmp_path, monkeypatch) == 0
    a, b = read_out(tmp_path / "maxitrack.out")[-2:]
    assert a == b
    assert a[1] in singles  # exactly one HDU was used


def test_choose_hdus():
    hdus = list(range(8))
    assert cli.choose_hdus(hdus, 1.0, None, "x") == hdus
    assert len(cli.choose_hdus(hdus, 0.01, 1, "x")) == 1
    half = cli.choose_hdus(hdus, 0.5, 3, "x")
    assert len(half) == 4 and half == sorted(half) and half == cli.choose_hdus(hdus, 0.5, 3, "x")


def test_bad_inputs_fail_alone(net_dir, tmp_path, monkeypatch, capsys):
    good = write_fits(tmp_path / "good.fits", [frame(1)])
    nan = write_fits(tmp_path / "nan.fits", [np.full((64, 64), np.nan, np.float32)])
    const = write_fits(tmp_path / "const.fits", [np.ones((64, 64), np.float32)])
    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(b"SIMPLE  = T" + b" " * 100)
    table_only = write_fits(tmp_path / "table.fits", [], table=True)
    missing = tmp_path / "missing.fits"
    capsys.readouterr()
    code = run([missing, nan, f"{good}[5]", good, const, corrupt, f"{table_only}[1]"], net_dir, tmp_path, monkeypatch)
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 6
    assert all(line.startswith("maxitrack: error: ") for line in err)
    assert str(missing) in err[0] and "NaN" in err[1] and "out of range" in err[2]
    assert "constant" in err[3] and str(corrupt) in err[4] and "not an image" in err[5]
    assert [line[0] for line in read_out(tmp_path / "maxitrack.out")] == [str(good)]


@pytest.mark.parametrize(
    "args",
    [["--prior", "0"], ["--prior", "1.5"], ["--frac", "0"], ["--frac", "x"], ["--batch_size", "0"]],
)
def test_usage_errors_exit_2(net_dir, tmp_path, monkeypatch, capsys, args):
    f = write_fits(tmp_path / "a.fits", [frame(1)])
    assert run([f, *args], net_dir, tmp_path, monkeypatch) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("maxitrack: error: usage: ")
    assert not (tmp_path / "maxitrack.out").exists()


def test_bad_network_dir_exits_2(tmp_path, monkeypatch, capsys):
    f = write_fits(tmp_path / "a.fits", [frame(1)])
    assert run([f], tmp_path / "nowhere", tmp_path, monkeypatch) == 2
    assert capsys.readouterr().err.startswith("maxitrack: error: ")
    assert not (tmp_path / "maxitrack.out").exists()


def test_small_image_and_batch_size(net_dir, tmp_path, monkeypatch):
    f = write_fits(tmp_path / "s.fits", [frame(1, shape=(20, 25), n_stars=2), frame(2, shape=(300, 200))])
    outs = []
    for bs in ("1", "16"):
        out = tmp_path / f"b{bs}.out"
        monkeypatch.chdir(tmp_path)
        assert cli.main([str(f), "--batch_size", bs, "-o", str(out), "--net_dir", str(net_dir), "-q"]) == 0
        outs.append(read_out(out))
    assert outs[0] == outs[1]
    assert math.isfinite(float(outs[0][0][1]))


def test_compressed_and_gzipped_inputs_score_like_plain(net_dir, tmp_path, monkeypatch):
    import gzip
    import shutil

    im = frame(21)
    plain = write_fits(tmp_path / "p.fits", [im])
    fz = tmp_path / "p.fits.fz"
    with fitsio.FITS(str(fz), "rw", clobber=True) as f:
        f.write(im, compress="GZIP_2", qlevel=None)  # lossless
    gz = tmp_path / "p.fits.gz"
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert run([plain, fz, gz], net_dir, tmp_path, monkeypatch) == 0
    lines = read_out(tmp_path / "maxitrack.out")
    assert [line[0] for line in lines] == [str(plain), str(fz), str(gz)]
    assert len({line[1] for line in lines}) == 1


def test_network_with_autocorrelation_input(tmp_path):
    """A "tile+autocorr" network: exported with its custom input layer, reloaded by Keras, and fed the
    same input by the command as by training (:func:`maxitrack.tiles.network_input`)."""
    keras = pytest.importorskip("keras")
    from maximask.network import NetworkMetadata, save_network
    from maxitrack.model import build_model, custom_objects
    from maxitrack.tiles import network_input, prepare_tiles, tile_normalisation

    keras.utils.set_random_seed(0)
    model = build_model(TILE, (4, 4, 4, 4), inputs="tile+autocorr", ac_widths=(4, 4, 4, 4))
    assert model.input_shape == (None, TILE, TILE, 2)
    meta = NetworkMetadata(
        name="maxitrack", classes=["TRACKING_ERROR"], training_priors=[0.5], margin=0, tile_size=TILE,
        size_multiple=1, normalisation=tile_normalisation(TILE),
        extra={"tiles": {"n_tiles": 3}, "input": "tile+autocorr"},
    )
    d = tmp_path / "net"
    save_network(model, d, meta)
    scorer = cli.Scorer(d, prior=0.5, batch_size=2)
    tiles = prepare_tiles(frame(7), TILE, {"n_tiles": 3})
    ref = model.predict(network_input(tiles, "tile+autocorr"), verbose=0)
    assert np.allclose(scorer.logits(tiles), ref, atol=1e-4)
    again = keras.models.load_model(d / "model.keras", custom_objects=custom_objects())
    assert np.allclose(again.predict(network_input(tiles, "tile+autocorr"), verbose=0), ref, atol=1e-5)
