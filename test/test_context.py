"""The context pass: binning, interpolation back to full resolution, combination, and the engine."""

import numpy as np
import pytest

from maximask.classes import ABBRS
from maximask.context import (MIN_BINNED_SIDE, BlockSmoothing, ContextPass, add_block_sums, bin_frame,
                              combine, upsample)
from maximask.engine import infer


def test_bin_frame_means_blocks_ignoring_nonfinite_pixels():
    image = np.arange(7 * 5, dtype=">i2").reshape(7, 5)  # big-endian integers, as FITS gives them
    got = bin_frame(image, 3)
    assert got.shape == (3, 2) and got.dtype == np.float32
    x = image.astype(float)
    assert got[0, 0] == x[:3, :3].mean()
    assert got[0, 1] == x[:3, 3:].mean()  # a partial block averages the pixels it holds
    assert got[2, 1] == x[6:, 3:].mean()
    f = x.astype(np.float32)
    f[0, 0], f[1, 1], f[3:6, 3:] = np.nan, np.inf, np.nan
    got = bin_frame(f, 3)
    assert got[0, 0] == pytest.approx(np.delete(x[:3, :3].ravel(), [0, 4]).mean())
    assert np.isnan(got[1, 1]) and np.isfinite(np.delete(got.ravel(), 3)).all()


def test_bin_frame_by_bands_equals_one_reshape():
    """Frames taller than one band of blocks (64 block rows) are binned band by band."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (8 * 70 + 5, 33)).astype(np.float32)
    got = bin_frame(image, 8)
    padded = np.full((8 * 71, 40), np.nan)
    padded[: image.shape[0], :33] = image
    expected = np.nanmean(padded.reshape(71, 8, 5, 8), axis=(1, 3))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # float32 sums


def test_upsample_is_bilinear_at_pixel_centres_and_seamless():
    b = 4
    yy, xx = np.mgrid[0:10, 0:12].astype(np.float32)
    coarse = np.stack([2 * yy - 3 * xx, np.ones_like(yy)])
    full = upsample(coarse, b, slice(0, 40), slice(0, 48))
    assert full.shape == (2, 40, 48) and full.dtype == np.float32
    # a linear map is reproduced between the first and last block centres ((i + 0.5) / b - 0.5)
    u = (np.arange(40) + 0.5) / b - 0.5
    v = (np.arange(48) + 0.5) / b - 0.5
    inside = np.ix_((u >= 0) & (u <= 9), (v >= 0) & (v <= 11))
    np.testing.assert_allclose(full[0][inside], (2 * u[:, None] - 3 * v[None, :])[inside], atol=1e-5)
    # beyond them, the end value
    assert full[0, 0, 0] == full[0, 1, 1] == 0.0
    assert (full[1] == 1).all()
    # any window gives the pixels their whole-frame values (to float32 rounding): tiles stitch
    # without seams
    np.testing.assert_allclose(upsample(coarse, b, slice(13, 29), slice(5, 47)), full[:, 13:29, 5:47],
                               rtol=0, atol=1e-5)


def test_combine_changes_only_the_named_channels():
    plan = ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "mean", "OV": "coarse"}}, ABBRS)
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (5, 6, len(ABBRS))).astype(np.float32)
    before = logits.copy()
    ctx = rng.normal(0, 3, (2, 5, 6)).astype(np.float32)
    out = combine(logits, ctx, plan)
    assert out is logits
    neb, ov = ABBRS.index("NEB"), ABBRS.index("OV")
    np.testing.assert_allclose(out[..., neb], 0.5 * (before[..., neb] + ctx[0]), rtol=1e-6)
    np.testing.assert_array_equal(out[..., ov], ctx[1])
    others = [c for c in range(len(ABBRS)) if c not in (neb, ov)]
    np.testing.assert_array_equal(out[..., others], before[..., others])


def test_context_metadata_is_checked():
    assert ContextPass.from_metadata(None, ABBRS) is None
    assert ContextPass.from_metadata({"factor": 8, "classes": {}}, ABBRS) is None
    with pytest.raises(ValueError, match="XYZ"):
        ContextPass.from_metadata({"factor": 8, "classes": {"XYZ": "mean"}}, ABBRS)
    with pytest.raises(ValueError, match="max"):
        ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "max"}}, ABBRS)
    with pytest.raises(ValueError, match="at least 2"):
        ContextPass.from_metadata({"factor": 1, "classes": {"NEB": "mean"}}, ABBRS)
    plan = ContextPass.from_metadata({"factor": 8, "classes": {"BBG": "coarse"}}, ABBRS)
    assert plan.channels == (ABBRS.index("BBG"),) and plan.modes == ("coarse",)
    side = 8 * MIN_BINNED_SIDE
    assert plan.applies_to((side, side)) and plan.applies_to((side - 7, 5000))
    assert not plan.applies_to((side - 8, 5000))


def test_malformed_context_makes_a_malformed_network(tmp_path, test_net_dir):
    import json
    import shutil

    from maximask.errors import UsageError
    from maximask.network import Network

    net_dir = tmp_path / "net"
    shutil.copytree(test_net_dir, net_dir)
    meta = json.loads((net_dir / "metadata.json").read_text())
    meta["context"] = {"factor": 4, "classes": {"NEB": "median"}}
    (net_dir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="malformed network metadata"):
        Network(net_dir)


def sky(shape, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(500.0, 8.0, shape).astype(np.float32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    image += 30.0 * np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 3) ** 2) / (2 * 40.0**2))  # a nebula
    image[10:14, 50:54] += 3e4
    return image


def logit_planes(lg):
    return np.moveaxis(lg, -1, 0).copy()


def test_engine_combines_the_binned_frames_logits(network, with_metadata):
    """The engine's result is the frame's logits with the named classes combined with the binned
    frame's logits, interpolated; the other classes, and the input, are untouched."""
    context = {"factor": 2, "classes": {"NEB": "mean", "OV": "coarse"}}
    net = with_metadata(context=context)
    image = sky((150, 230))
    kept = image.copy()
    got = infer(image, net, batch_size=3, tile_transform=logit_planes)
    np.testing.assert_array_equal(image, kept)
    alone = infer(image, net, batch_size=3, tile_transform=logit_planes, context=False)
    np.testing.assert_array_equal(alone, infer(image, network, batch_size=3, tile_transform=logit_planes))
    coarse = infer(bin_frame(image, 2), network, tile_transform=logit_planes)
    up = upsample(coarse, 2, slice(0, 150), slice(0, 230))
    neb, ov = ABBRS.index("NEB"), ABBRS.index("OV")
    np.testing.assert_allclose(got[neb], 0.5 * (alone[neb] + up[neb]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[ov], up[ov], rtol=1e-6, atol=1e-6)
    others = [c for c in range(len(ABBRS)) if c not in (neb, ov)]
    np.testing.assert_array_equal(got[others], alone[others])
    assert np.abs(got[neb] - alone[neb]).max() > 1e-3  # the pass changed something
    # the default output (probabilities) carries the same combination, whatever the batch size
    probs = infer(image, net, batch_size=1)
    np.testing.assert_allclose(probs[ov], 1 / (1 + np.exp(-up[ov])), rtol=1e-5, atol=1e-6)


def test_engine_skips_the_pass_on_small_frames(network, with_metadata):
    net = with_metadata(context={"factor": 4, "classes": {"NEB": "coarse"}})
    image = sky((4 * MIN_BINNED_SIDE - 4, 300))
    np.testing.assert_array_equal(infer(image, net, tile_transform=logit_planes),
                                  infer(image, network, tile_transform=logit_planes))


def test_offsets_without_pass_metadata_is_checked():
    plan = ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "mean", "OV": "mean"}}, ABBRS)
    assert plan.offsets_without_pass == (0.0, 0.0)
    plan = ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "mean", "OV": "mean"},
                                      "without_pass": {"OV": -1.5}}, ABBRS)
    assert plan.offsets_without_pass == (0.0, -1.5)
    with pytest.raises(ValueError, match="'FR' is not one of the pass's classes"):
        ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "mean"}, "without_pass": {"FR": 1.0}}, ABBRS)
    for bad in (float("nan"), float("inf"), "1.0", True, None):
        with pytest.raises(ValueError, match="offset of NEB is not a finite number"):
            ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "mean"}, "without_pass": {"NEB": bad}},
                                      ABBRS)


def test_frames_that_skip_the_pass_take_its_offsets(network, with_metadata):
    """A frame too small for the pass gets the metadata's offsets added to the named classes' logits
    (in every output); a frame large enough for the pass does not."""
    context = {"factor": 4, "classes": {"NEB": "coarse", "OV": "mean", "BBG": "mean"},
               "without_pass": {"NEB": -2.25, "OV": 0.5}}
    net = with_metadata(context=context)
    neb, ov = ABBRS.index("NEB"), ABBRS.index("OV")
    small = sky((4 * MIN_BINNED_SIDE - 4, 300))
    plain = infer(small, network, tile_transform=logit_planes)
    got = infer(small, net, tile_transform=logit_planes)
    np.testing.assert_array_equal(got[neb], plain[neb] + np.float32(-2.25))
    np.testing.assert_array_equal(got[ov], plain[ov] + np.float32(0.5))
    others = [c for c in range(len(ABBRS)) if c not in (neb, ov)]
    np.testing.assert_array_equal(got[others], plain[others])
    probs = infer(small, net, batch_size=1)
    np.testing.assert_allclose(probs[neb], 1 / (1 + np.exp(-(plain[neb] - 2.25))), rtol=1e-5, atol=1e-6)
    large = sky((4 * MIN_BINNED_SIDE, 300))
    without = dict(context)
    del without["without_pass"]
    np.testing.assert_array_equal(infer(large, net, tile_transform=logit_planes),
                                  infer(large, with_metadata(context=without), tile_transform=logit_planes))


def test_model_id_names_the_context_pass(test_net_dir):
    from maximask.network import weights_hash

    files = [test_net_dir / "model.tflite"]
    plain = weights_hash(*files)
    with_ctx = weights_hash(*files, inference={"context": {"factor": 8, "classes": {"NEB": "mean"}}})
    assert with_ctx != plain
    assert weights_hash(*files, inference={"context": {"classes": {"NEB": "mean"}, "factor": 8}}) == with_ctx
    assert weights_hash(*files, inference={"context": {"factor": 4, "classes": {"NEB": "mean"}}}) != with_ctx
    assert weights_hash(*files, inference={"context": None, "smoothing": None, "name": "x"}) == plain
    smoothed = {"context": {"factor": 8, "classes": {"NEB": "mean"}},
                "smoothing": {"block": 256, "classes": ["FR"]}}
    assert weights_hash(*files, inference=smoothed) not in (plain, with_ctx)


@pytest.mark.parametrize("block", [4, 7, 16])
def test_block_sums_of_windows_add_up_to_the_frames(block):
    """Windows at any alignment (tile cores, blocks of rows) add up to the whole frame's block sums."""
    rng = np.random.default_rng(2)
    frame = rng.normal(0, 1, (53, 70)).astype(np.float32)
    whole = np.zeros((-(-53 // block), -(-70 // block)))
    add_block_sums(whole, frame, 0, 0, block)
    hb, wb = whole.shape
    padded = np.zeros((hb * block, wb * block))
    padded[:53, :70] = frame
    np.testing.assert_allclose(whole, padded.reshape(hb, block, wb, block).sum(axis=(1, 3)), rtol=1e-10)
    parts = np.zeros_like(whole)
    for y0, y1 in ((0, 9), (9, 30), (30, 53)):
        for x0, x1 in ((0, 33), (33, 70)):
            add_block_sums(parts, frame[y0:y1, x0:x1], y0, x0, block)
    np.testing.assert_allclose(parts, whole, rtol=1e-10, atol=1e-10)
    counts = BlockSmoothing(block, (0,)).block_counts((53, 70))
    assert counts.sum() == 53 * 70 and counts[0, 0] == block * block


def test_smoothing_metadata_is_checked():
    assert BlockSmoothing.from_metadata(None, ABBRS) is None
    plan = BlockSmoothing.from_metadata({"block": 64, "classes": ["FR", "NEB"]}, ABBRS)
    assert plan.block == 64 and plan.channels == (ABBRS.index("FR"), ABBRS.index("NEB"))
    with pytest.raises(ValueError, match="XYZ"):
        BlockSmoothing.from_metadata({"block": 64, "classes": ["XYZ"]}, ABBRS)
    with pytest.raises(ValueError, match="at least 2"):
        BlockSmoothing.from_metadata({"block": 1, "classes": ["FR"]}, ABBRS)


def smoothed_reference(network, image, block, channels):
    """The definition: full-resolution logits, the channels replaced by their interpolated block
    means over the whole frame."""
    alone = infer(image, network, tile_transform=logit_planes)
    sums = np.zeros((len(channels), -(-image.shape[0] // block), -(-image.shape[1] // block)))
    for k, c in enumerate(channels):
        add_block_sums(sums[k], alone[c], 0, 0, block)
    means = (sums / BlockSmoothing(block, channels).block_counts(image.shape)).astype(np.float32)
    expected = alone.copy()
    expected[list(channels)] = upsample(means, block, slice(0, image.shape[0]), slice(0, image.shape[1]))
    return alone, expected


def test_engine_smooths_the_named_classes_over_the_whole_frame(network, with_metadata):
    fr, neb = ABBRS.index("FR"), ABBRS.index("NEB")
    net = with_metadata(smoothing={"block": 16, "classes": ["FR", "NEB"]})
    image = sky((150, 230))  # several tiles of the test network
    alone, expected = smoothed_reference(network, image, 16, (fr, neb))
    got = infer(image, net, batch_size=2, tile_transform=logit_planes)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    others = [c for c in range(len(ABBRS)) if c not in (fr, neb)]
    np.testing.assert_array_equal(got[others], alone[others])
    assert np.abs(got[fr] - alone[fr]).max() > 1e-2  # the smoothing did something
    # block means are smooth: neighbouring pixels differ by at most a block's step
    assert np.abs(np.diff(got[fr], axis=1)).max() < np.abs(np.diff(alone[fr], axis=1)).max()


@pytest.mark.parametrize("mode", ["masks", "single", "probabilities", "default"])
def test_every_output_writes_the_smoothed_classes(network, with_metadata, mode):
    """Masks, the single bit mask and probabilities (with a prior modification) of the smoothed
    classes are those of the smoothed logits, whichever way the engine writes them."""
    from maximask.postprocess import make_plan, transform

    fr, neb = ABBRS.index("FR"), ABBRS.index("NEB")
    net = with_metadata(smoothing={"block": 8, "classes": ["FR", "NEB"]})
    image = sky((150, 230), seed=4)
    _, expected = smoothed_reference(network, image, 8, (fr, neb))
    flags = np.ones(len(ABBRS), bool)
    flags[neb] = False  # a smoothed class that is not written
    train = [0.01] * (len(ABBRS) - 1) + [0.9]
    priors = np.linspace(0.001, 0.9, len(ABBRS))
    # thresholds near the smoothed logits' median, so that the masks are not all 0 or all 1
    median_fr = np.median(expected[fr])
    thresh = np.full(len(ABBRS), 0.5)
    if mode == "default":
        got = infer(image, net)
        np.testing.assert_allclose(got, 1 / (1 + np.exp(-expected)), rtol=1e-5, atol=1e-6)
        return
    if mode == "probabilities":
        plan = make_plan(ABBRS, flags, train, priors)
    else:
        thresh[fr] = 1 / (1 + np.exp(-median_fr))
        plan = make_plan(ABBRS, flags, thresholds=thresh, single_mask=mode == "single")
    got = infer(image, net, batch_size=2, tile_transform=plan)
    want = transform(plan, np.ascontiguousarray(np.moveaxis(expected, 0, -1)))
    if mode == "probabilities":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    else:
        # a pixel whose smoothed logit is within float rounding of the threshold may flip
        differs = got != want
        assert differs.mean() < 1e-3
        k = plan.classes.index(fr) if mode == "masks" else None
        fr_mask = got[k] if mode == "masks" else (got & plan.channel_bits[fr]) != 0
        assert 0.2 < fr_mask.mean() < 0.8


def test_context_pass_then_smoothing(network, with_metadata):
    """With both, a class is smoothed after the context pass combined it."""
    neb = ABBRS.index("NEB")
    context = {"factor": 2, "classes": {"NEB": "mean"}}
    both = with_metadata(smoothing={"block": 16, "classes": ["NEB"]}, context=context)
    image = sky((150, 230))
    combined = infer(image, with_metadata(context=context), tile_transform=logit_planes)
    sums = np.zeros((1, 10, 15))
    add_block_sums(sums[0], combined[neb], 0, 0, 16)
    means = (sums / BlockSmoothing(16, (neb,)).block_counts(image.shape)).astype(np.float32)
    got = infer(image, both, tile_transform=logit_planes)
    expected = upsample(means, 16, slice(0, 150), slice(0, 230))[0]
    np.testing.assert_allclose(got[neb], expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def with_context_network(tmp_path_factory, test_net, test_net_dir):
    """A copy of the test network whose context pass runs a context network of its own: the test
    network with other (random) weights, in the subdirectory ``context``."""
    import dataclasses
    import json
    import shutil

    import keras

    from maximask.network import Network, NetworkMetadata, save_network

    net_dir = tmp_path_factory.mktemp("with_context") / "net"
    shutil.copytree(test_net_dir, net_dir)
    other = keras.models.clone_model(test_net.model)
    rng = np.random.default_rng(3)
    other.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in test_net.model.get_weights()])
    meta = NetworkMetadata.from_dict(json.loads((net_dir / "metadata.json").read_text()))
    save_network(other, net_dir / "context", dataclasses.replace(meta, extra={"bin": 2}))
    meta_dict = json.loads((net_dir / "metadata.json").read_text())
    meta_dict["context"] = {"factor": 2, "classes": {"NEB": "mean", "OV": "coarse"}, "network": "context"}
    (net_dir / "metadata.json").write_text(json.dumps(meta_dict))
    return net_dir, Network(net_dir, num_threads=1), Network(net_dir / "context", num_threads=1)


def test_engine_runs_the_binned_frame_through_the_context_network(network, with_metadata,
                                                                  with_context_network):
    net_dir, net, context_net = with_context_network
    assert net.context_network is not net
    image = sky((150, 230))
    got = infer(image, net, batch_size=2, tile_transform=logit_planes)
    alone = infer(image, network, tile_transform=logit_planes)
    up = upsample(infer(bin_frame(image, 2), context_net, tile_transform=logit_planes), 2,
                  slice(0, 150), slice(0, 230))
    neb, ov = ABBRS.index("NEB"), ABBRS.index("OV")
    np.testing.assert_allclose(got[neb], 0.5 * (alone[neb] + up[neb]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[ov], up[ov], rtol=1e-6, atol=1e-6)
    others = [c for c in range(len(ABBRS)) if c not in (neb, ov)]
    np.testing.assert_array_equal(got[others], alone[others])
    # not what the network itself gives on the binned frame
    same_net = infer(image, with_metadata(context={"factor": 2, "classes": {"OV": "coarse"}}),
                     tile_transform=logit_planes)
    assert np.abs(same_net[ov] - got[ov]).max() > 1e-3


def test_model_id_covers_the_context_networks_weights(tmp_path, with_context_network):
    import json
    import shutil

    from maximask.errors import UsageError
    from maximask.network import Network

    net_dir, net, _ = with_context_network
    copy = tmp_path / "net"
    shutil.copytree(net_dir, copy)
    assert Network(copy).model_id == net.model_id
    tflite = copy / "context" / "model.tflite"
    data = tflite.read_bytes()
    tflite.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # another context network
    assert Network(copy).model_id != net.model_id
    shutil.rmtree(copy / "context")
    with pytest.raises(UsageError, match="context network context/ is missing"):
        Network(copy)
    shutil.copytree(net_dir / "context", copy / "context")
    inner = json.loads((copy / "context" / "metadata.json").read_text())
    inner["context"] = {"factor": 2, "classes": {"NEB": "mean"}}
    (copy / "context" / "metadata.json").write_text(json.dumps(inner))
    with pytest.raises(UsageError, match="no context pass of its own"):
        Network(copy)


@pytest.mark.parametrize("name", ["", "..", "../other", "a/b", 3])
def test_context_network_must_be_a_subdirectory_name(name):
    with pytest.raises(ValueError, match="context network"):
        ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "mean"}, "network": name}, ABBRS)
    assert ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "mean"}, "network": "ctx"},
                                     ABBRS).network == "ctx"


def test_classes_outside_network_classes_come_from_the_network_itself(network, with_context_network,
                                                                       monkeypatch):
    """``network_classes`` names the classes the context network gives; the others' binned logits
    come from the network itself on the same binned frame (two passes over it)."""
    import json
    import shutil

    from maximask.network import Network

    net_dir, net, context_net = with_context_network
    mixed_dir = net_dir.parent / "mixed"
    if not mixed_dir.exists():
        shutil.copytree(net_dir, mixed_dir)
        meta = json.loads((mixed_dir / "metadata.json").read_text())
        meta["context"]["network_classes"] = ["OV"]
        (mixed_dir / "metadata.json").write_text(json.dumps(meta))
    mixed = Network(mixed_dir, num_threads=1)
    assert mixed.model_id != net.model_id
    image = sky((150, 230))
    got = infer(image, mixed, batch_size=2, tile_transform=logit_planes)
    binned = bin_frame(image, 2)
    rows, cols = slice(0, 150), slice(0, 230)
    own = upsample(infer(binned, network, tile_transform=logit_planes), 2, rows, cols)
    ctx = upsample(infer(binned, context_net, tile_transform=logit_planes), 2, rows, cols)
    alone = infer(image, network, tile_transform=logit_planes)
    neb, ov = ABBRS.index("NEB"), ABBRS.index("OV")
    np.testing.assert_allclose(got[neb], 0.5 * (alone[neb] + own[neb]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[ov], ctx[ov], rtol=1e-6, atol=1e-6)
    # the context network's working memory is freed after its pass on large binned frames only,
    # and it runs the same again
    import maximask.engine

    assert mixed.context_network._shape is not None
    monkeypatch.setattr(maximask.engine, "RELEASE_MIN_BINNED_PIXELS", 75 * 115)
    again = infer(image, mixed, batch_size=2, tile_transform=logit_planes)
    assert mixed.context_network._shape is None
    np.testing.assert_array_equal(again, got)
    np.testing.assert_array_equal(infer(image, mixed, batch_size=2, tile_transform=logit_planes), got)


@pytest.mark.parametrize("entry, message", [
    ({"network_classes": ["NEB"]}, "without a context network"),
    ({"network": "ctx", "network_classes": ["BBG"]}, "'BBG' is not one of the pass's classes"),
])
def test_network_classes_must_be_classes_of_the_pass_with_a_context_network(entry, message):
    with pytest.raises(ValueError, match=message):
        ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "mean", "OV": "coarse"}, **entry}, ABBRS)
    plan = ContextPass.from_metadata({"factor": 8, "classes": {"NEB": "mean", "OV": "coarse"}, "network": "c",
                                      "network_classes": ["OV"]}, ABBRS)
    assert plan.by_context_network == (False, True)
