"""Background and noise maps, scaling, and the handling of non-finite and degenerate frames."""

import numpy as np
import pytest

from maximask.normalize import DEFAULT_NORMALISATION, mesh_statistics, normalize_image


def sky(shape, level=1000.0, sigma=10.0, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (level + rng.normal(0.0, sigma, shape)).astype(dtype)


def _clip_loop(x, clip, iters):
    """Reference: the same clipping written as a plain loop with boolean masks."""
    x = np.sort(x[np.isfinite(x)])
    rank = lambda q: x[int(round(q * (x.size - 1)))]  # noqa: E731
    width = 0.5 * (rank(0.8413) - rank(0.1587))
    keep = (x >= rank(0.5) - clip * width) & (x <= rank(0.5) + clip * width)
    for _ in range(iters):
        k = x[keep]
        med, std = np.median(k), k.std()
        new = (x >= med - clip * std) & (x <= med + clip * std)
        if (new == keep).all():
            break
        keep = new
    k = x[keep]
    med, mean, std = np.median(k), k.mean(), k.std()
    mode = med if abs(mean - med) > 0.3 * std else 2.5 * med - 1.5 * mean
    return mode, std, keep.sum()


def test_mesh_statistics_match_plain_loop():
    rng = np.random.default_rng(1)
    rows = [
        rng.normal(5.0, 2.0, 4000),
        np.concatenate([rng.normal(0.0, 1.0, 3000), rng.exponential(30.0, 1000)]),  # sources
        np.concatenate([rng.normal(-3.0, 0.5, 2000), np.full(2000, np.nan)]),  # half masked
        rng.standard_cauchy(4000),
    ]
    mode, std, n = mesh_statistics(np.array(rows), 3.0, 5)
    for i, r in enumerate(rows):
        m_ref, s_ref, n_ref = _clip_loop(r, 3.0, 5)
        assert n[i] == n_ref
        assert mode[i] == pytest.approx(m_ref, rel=1e-9, abs=1e-9)
        assert std[i] == pytest.approx(s_ref, rel=1e-6)


def test_mesh_statistics_empty_mesh_is_nan():
    mode, std, n = mesh_statistics(np.full((1, 100), np.nan), 3.0, 5)
    assert np.isnan(mode[0]) and np.isnan(std[0]) and n[0] == 0


def test_flat_sky_background_and_noise_recovered():
    norm = normalize_image(sky((600, 700)))
    assert norm.data.shape == (600, 700) and norm.data.dtype == np.float32
    assert norm.background == pytest.approx(1000.0, abs=0.3)
    assert norm.sigma == pytest.approx(10.0, rel=0.03)
    # unit noise through asinh: std(asinh(N(0, 1))) = 0.80
    assert abs(float(norm.data.mean())) < 0.02
    assert float(norm.data.std()) == pytest.approx(0.80, abs=0.02)
    assert norm.n_nonfinite == 0


def test_gradient_removed_everywhere():
    yy, xx = np.mgrid[0:1024, 0:1024]
    img = sky((1024, 1024)) + 0.5 * xx + 0.2 * yy  # 500 ADU = 50 sigma across the frame
    d = normalize_image(img).data
    for sl in [np.s_[:128, :128], np.s_[-128:, -128:], np.s_[:128, -128:], np.s_[450:570, 450:570]]:
        assert abs(float(d[sl].mean())) < 0.1


def test_large_scale_structure_survives():
    """A 150-px nebulosity at 3 sigma must stay visible to the network."""
    yy, xx = np.mgrid[0:1024, 0:1024]
    blob = 30.0 * np.exp(-((yy - 512) ** 2 + (xx - 512) ** 2) / (2 * 64.0**2))  # FWHM 150 px
    d = normalize_image(sky((1024, 1024)) + blob).data
    centre = float(d[492:532, 492:532].mean())
    assert centre > 0.8 * np.arcsinh(3.0)  # >= 80 % of the 3-sigma peak kept after compression


def test_dynamic_range_of_the_scaling():
    img = sky((512, 512))
    img[100:110, 100:110] = 1000 + 10 * 1e5  # saturated star at 1e5 sigma
    img[300, 300] = 1000 - 10 * 200  # dead pixel
    d = normalize_image(img).data
    assert 11.0 < d[105, 105] < 13.0  # asinh(1e5) = 12.2
    assert -7.0 < d[300, 300] < -5.0  # asinh(-200) = -6.0


def test_bright_mesh_does_not_leak_into_neighbours():
    img = sky((1024, 1024))
    img[256:512, 256:512] += 5000.0  # a mesh covered by a saturated halo
    d = normalize_image(img).data
    # the median filter replaces the outlier mesh: its neighbours' sky stays at 0
    assert abs(float(d[600:700, 600:700].mean())) < 0.05
    assert abs(float(d[100:200, 300:400].mean())) < 0.05


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_pixels_zeroed_and_counted(bad):
    img = sky((512, 512))
    img[200:220, 10:300] = bad
    img[5, 5] = bad
    norm = normalize_image(img)
    assert norm.n_nonfinite == 20 * 290 + 1
    assert np.isfinite(norm.data).all()
    assert (norm.data[200:220, 10:300] == 0).all() and norm.data[5, 5] == 0
    # the neighbours' values move only by the sampling error of the mesh statistics, which lose
    # a few samples (sigma / sqrt(2700 samples) = 0.02 sigma)
    ref = normalize_image(sky((512, 512))).data
    keep = np.isfinite(img)
    assert np.abs(norm.data - ref)[keep].max() < 0.05


def test_nan_inf_and_minus_inf_are_one_case():
    a, b = sky((300, 300)), sky((300, 300))
    a[100:150, 100:150] = np.nan
    b[100:150, 100:150] = np.inf
    b[120:130, 100:150] = -np.inf
    np.testing.assert_array_equal(normalize_image(a).data, normalize_image(b).data)


def test_huge_finite_values_do_not_overflow():
    img = sky((256, 256), dtype=np.float64)
    img[10, 10] = 1e300  # beyond float32
    img[20, 20] = -1e300
    d = normalize_image(img).data
    assert np.isfinite(d).all()
    assert d[10, 10] == DEFAULT_NORMALISATION["limit"] and d[20, 20] == -DEFAULT_NORMALISATION["limit"]


def test_float64_offset_precision_kept():
    img = sky((256, 256), level=1e7, sigma=1.0, dtype=np.float64)
    d = normalize_image(img).data
    assert float(d.std()) == pytest.approx(0.80, abs=0.03)


def test_integer_input_same_as_float():
    img = np.round(sky((300, 200), sigma=20.0))
    a = normalize_image(img.astype(np.int16)).data
    b = normalize_image(img.astype(np.float32)).data
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_big_endian_input():
    img = sky((128, 128))
    np.testing.assert_array_equal(normalize_image(img.astype(">f4")).data, normalize_image(img).data)


@pytest.mark.parametrize("shape", [(1, 2), (3, 5), (100, 80), (17, 1000), (257, 513)])
def test_any_shape(shape):
    d = normalize_image(sky(shape)).data
    assert d.shape == shape and np.isfinite(d).all()


def test_mostly_constant_frame_with_noise_somewhere():
    img = np.zeros((512, 512), np.float32)
    img[:, :64] = sky((512, 64))  # overscan-like strip is the only noisy part
    d = normalize_image(img).data
    assert np.isfinite(d).all()


@pytest.mark.parametrize(
    "image, reason",
    [
        (np.full((50, 50), np.nan), "NaN"),
        (np.full((50, 50), 7.0), "constant"),
        (np.zeros((4, 5, 6)), "2D"),
        (np.zeros((0, 5)), "empty"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_degenerate_frames_raise(image, reason):
    with pytest.raises(ValueError, match=reason):
        normalize_image(image)


def test_constant_with_nans_raises():
    img = np.full((64, 64), 3.0)
    img[::2] = np.nan
    with pytest.raises(ValueError, match="constant"):
        normalize_image(img)


def test_params_default_and_unknown():
    img = sky((128, 128))
    np.testing.assert_array_equal(normalize_image(img).data, normalize_image(img, DEFAULT_NORMALISATION).data)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_image(img, {"name": "something_else"})


def test_softening_parameter_used():
    img = sky((128, 128))
    a = normalize_image(img).data
    b = normalize_image(img, dict(DEFAULT_NORMALISATION, softening=2.0)).data
    np.testing.assert_allclose(b, np.arcsinh(np.sinh(a.astype(np.float64)) / 2.0), atol=1e-5)


def test_row_interpolation_of_the_maps_matches_the_exact_spline():
    """Rows between spline knots are linearly interpolated: the error must stay far below sigma."""
    from maximask import normalize as nm

    yy, xx = np.mgrid[0:1100, 0:900]
    img = sky((1100, 900)) + 0.3 * xx + 100.0 * np.exp(-((yy - 500) ** 2 + (xx - 400) ** 2) / (2 * 150.0**2))
    bg_map, sigma_map = nm.background_maps(img)
    bg, sg, mesh = nm.background_meshes(img, np.isfinite(img), dict(DEFAULT_NORMALISATION))
    ry = nm._spline_matrix(bg.shape[0], mesh, 1100)
    rx = nm._spline_matrix(bg.shape[1], mesh, 900)
    exact = ry @ bg @ rx.T
    assert np.abs(bg_map - exact).max() < 1e-3 * float(np.median(sg))
    assert np.abs(sigma_map / (1.0 / (ry @ (1.0 / sg) @ rx.T)) - 1).max() < 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_in_place_normalisation_equals_the_copy(dtype):
    """overwrite_input reuses a float32 frame's memory and gives the same values; other dtypes (and
    read-only arrays) are left untouched and get a new array."""
    rng = np.random.default_rng(11)
    image = (1000 + 30 * rng.normal(size=(300, 520))).astype(dtype)
    if dtype != np.int16:
        image[5, 7] = np.nan
    expected = normalize_image(image.copy()).data
    work = image.copy()
    got = normalize_image(work, overwrite_input=True).data
    np.testing.assert_array_equal(got, expected)
    assert (got is work) == (dtype == np.float32)
    if dtype != np.float32:
        np.testing.assert_array_equal(work, image)
    frozen = image.copy()
    frozen.flags.writeable = False
    assert normalize_image(frozen, overwrite_input=True).data is not frozen


@pytest.mark.parametrize("n_pix,mesh", [(4096, 256), (4000, 256), (700, 128), (300, 128), (520, 256), (2047, 64)])
def test_mesh_interpolation_matches_scipy(n_pix, mesh):
    """The numpy spline weights (scipy is kept out of the command's imports) equal scipy's natural
    cubic spline (linear interpolation below 4 meshes), extrapolation at both ends included."""
    interpolate = pytest.importorskip("scipy.interpolate")
    from maximask.normalize import _spline_matrix

    n_mesh = -(-n_pix // mesh)
    centres = (np.arange(n_mesh) + 0.5) * mesh - 0.5
    centres[-1] = 0.5 * ((n_mesh - 1) * mesh + n_pix - 1)
    pix = np.arange(n_pix, dtype=float)
    eye = np.eye(n_mesh)
    if n_mesh < 4:
        expected = interpolate.interp1d(centres, eye, axis=0, fill_value="extrapolate")(pix)
    else:
        expected = interpolate.CubicSpline(centres, eye, bc_type="natural")(pix)
    np.testing.assert_allclose(_spline_matrix(n_mesh, mesh, n_pix), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("shape", [(16, 16), (1, 9), (9, 1), (2, 3), (5, 7)])
def test_mesh_median_filter_matches_scipy(shape):
    ndimage = pytest.importorskip("scipy.ndimage")
    from maximask.normalize import _median_filter

    grid = np.random.default_rng(sum(shape)).normal(size=shape)
    pad = [(1, 1) if n > 1 else (0, 0) for n in shape]
    padded = np.pad(grid, pad, mode="reflect", reflect_type="odd")
    expected = ndimage.median_filter(padded, size=[2 * a + 1 for a, _ in pad], mode="nearest")
    expected = expected[tuple(slice(a, a + n) for (a, _), n in zip(pad, shape))]
    np.testing.assert_array_equal(_median_filter(grid, 3), expected)


def test_command_imports_no_scipy(tmp_path):
    """scipy costs ~0.9 s of imports; the command on an ordinary frame must not need it."""
    import subprocess
    import sys

    from astropy.io import fits

    fits.PrimaryHDU(sky((300, 400))).writeto(tmp_path / "frame.fits")
    code = ("import sys; from maximask.cli import main\n"
            "try:\n    main(['-q', sys.argv[1]])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'tensorflow', 'keras'}))")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "frame.fits")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "frame.masks.fits").is_file()
