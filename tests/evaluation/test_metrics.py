"""Full-image metrics against independent references, and streamed equals whole."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from decloud.constants import S2_NODATA
from decloud.errors import EvaluationError, GridError, MissingBandError
from decloud.evaluation.metrics import (
    KINDS,
    QUALITY_CLEAR_CLASSES,
    QUALITY_RECONSTRUCTED_CLASSES,
    SSIM_RADIUS,
    Metrics,
    ScoreAccumulator,
    Scores,
    read_reflectance,
    regions_from_mask,
    regions_from_quality,
    score_arrays,
    score_rasters,
)
from decloud.keys import decode_s2, encode_s2

R = SSIM_RADIUS


def _pair(rng: np.random.Generator, h: int = 41, w: int = 53, c: int = 4,
          noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish reference and a noisy, slightly biased prediction, float64."""
    ref = rng.random((h, w, c)) * 0.3 + np.linspace(0, 0.2, w)[None, :, None]
    pred = ref + rng.normal(0.01, noise, ref.shape)
    return pred, ref


def _skimage_ssim_map(p: np.ndarray, r: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    _, full = structural_similarity(p, r, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=data_range,
                                    full=True)
    return np.asarray(full)


def _interior() -> tuple[slice, slice]:
    return slice(R, -R), slice(R, -R)


def _window_valid(ok: np.ndarray) -> np.ndarray:
    """Brute force: pixels whose whole (2R+1)^2 window is inside and valid."""
    h, w = ok.shape
    out = np.zeros_like(ok)
    for i in range(R, h - R):
        for j in range(R, w - R):
            out[i, j] = ok[i - R:i + R + 1, j - R:j + R + 1].all()
    return out


def _angle_mean(p: np.ndarray, r: np.ndarray) -> float:
    """numpy SAM as the mean of per-pixel angles, degrees."""
    cos = [np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(p, r,
                                                                                  strict=True)]
    return float(np.mean(np.degrees(np.arccos(np.clip(cos, -1, 1)))))


def _brute(p: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """Per-band-pooled MAE, RMSE, PSNR of ``(n, C)`` samples, by loops of Python floats."""
    diffs = [float(a - b) for a, b in zip(p.ravel(), r.ravel(), strict=True)]
    mae = sum(abs(d) for d in diffs) / len(diffs)
    mse = sum(d * d for d in diffs) / len(diffs)
    return {"mae": mae, "rmse": math.sqrt(mse), "psnr": 10 * math.log10(1 / mse)}


def test_every_metric_equals_its_reference_on_the_whole_image() -> None:
    pred, ref = _pair(np.random.default_rng(0))
    scores = score_arrays(pred, ref, bands=["B02", "B03", "B04", "B08"])
    s = scores["all"]
    n = pred.shape[0] * pred.shape[1]
    assert s.overall.n_pixels == n
    assert s.overall.n_ssim == (pred.shape[0] - 2 * R) * (pred.shape[1] - 2 * R)
    for i, band in enumerate(scores.bands):
        m = s.bands[band]
        p, r = pred[..., i], ref[..., i]
        brute = _brute(p, r)
        assert m.mae == pytest.approx(brute["mae"], rel=1e-12)
        assert m.rmse == pytest.approx(brute["rmse"], rel=1e-12)
        assert m.psnr == pytest.approx(peak_signal_noise_ratio(r, p, data_range=1), rel=1e-12)
        assert m.cc == pytest.approx(np.corrcoef(p.ravel(), r.ravel())[0, 1], rel=1e-12)
        assert m.ssim == pytest.approx(structural_similarity(
            p, r, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1), rel=1e-10)
        assert m.sam_deg is None  # a spectral angle needs every band
    brute = _brute(pred, ref)
    assert s.overall.mae == pytest.approx(brute["mae"], rel=1e-12)
    assert s.overall.rmse == pytest.approx(brute["rmse"], rel=1e-12)
    # Overall PSNR: from the MSE pooled over bands (not the mean of the bands' PSNRs).
    assert s.overall.psnr == pytest.approx(peak_signal_noise_ratio(ref, pred, data_range=1),
                                           rel=1e-12)
    assert s.overall.psnr != pytest.approx(np.mean([m.psnr for m in s.bands.values()]),
                                           rel=1e-6)
    assert s.overall.ssim == pytest.approx(np.mean([m.ssim for m in s.bands.values()]))
    assert s.overall.cc == pytest.approx(np.mean([m.cc for m in s.bands.values()]))
    flat_p, flat_r = pred.reshape(-1, 4), ref.reshape(-1, 4)
    assert s.overall.sam_deg == pytest.approx(_angle_mean(flat_p, flat_r), rel=1e-9)
    # The mean angle, not the angle of the mean cosine (the reference chain's SAM).
    cos = (flat_p * flat_r).sum(1) / np.linalg.norm(flat_p, axis=1) / np.linalg.norm(flat_r,
                                                                                     axis=1)
    assert s.overall.sam_deg != pytest.approx(np.degrees(np.arccos(cos.mean())), rel=1e-3)


def test_data_range_enters_psnr_and_ssim_as_in_scikit_image() -> None:
    pred, ref = _pair(np.random.default_rng(1), c=1)
    pred, ref = pred * 1000, ref * 1000
    m = score_arrays(pred, ref, data_range=1000)["all"].bands["B1"]
    assert m.psnr == pytest.approx(peak_signal_noise_ratio(ref[..., 0], pred[..., 0],
                                                           data_range=1000), rel=1e-12)
    assert m.ssim == pytest.approx(structural_similarity(
        pred[..., 0], ref[..., 0], gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1000), rel=1e-10)


def test_regions_equal_the_references_on_their_pixels() -> None:
    rng = np.random.default_rng(2)
    pred, ref = _pair(rng)
    cloud = np.zeros(pred.shape[:2], dtype=bool)
    cloud[8:30, 10:35] = True
    cloud |= rng.random(cloud.shape) < 0.05
    scores = score_arrays(pred, ref, regions={"reconstructed": cloud, "clear": ~cloud})
    assert list(scores.regions) == ["all", "reconstructed", "clear"]
    for region, sel in (("reconstructed", cloud), ("clear", ~cloud)):
        s = scores[region]
        p, r = pred[sel], ref[sel]
        assert s.overall.n_pixels == int(sel.sum())
        brute = _brute(p, r)
        for kind in ("mae", "rmse", "psnr"):
            assert getattr(s.overall, kind) == pytest.approx(brute[kind], rel=1e-12)
        assert s.overall.sam_deg == pytest.approx(_angle_mean(p, r), rel=1e-9)
        inside = _window_valid(np.ones(sel.shape, dtype=bool)) & sel
        assert s.overall.n_ssim == int(inside.sum())
        for i, band in enumerate(scores.bands):
            m = s.bands[band]
            assert m.cc == pytest.approx(np.corrcoef(p[:, i], r[:, i])[0, 1], rel=1e-12)
            ssim_map = _skimage_ssim_map(pred[..., i], ref[..., i])
            assert m.ssim == pytest.approx(ssim_map[inside].mean(), rel=1e-10)
    # Regions split "all": pixel counts add up.
    assert scores["reconstructed"].overall.n_pixels + scores["clear"].overall.n_pixels \
        == scores["all"].overall.n_pixels


def test_nodata_and_invalid_pixels_count_nowhere() -> None:
    rng = np.random.default_rng(3)
    pred, ref = _pair(rng, c=3)
    ref[5:8, 20:30, 1] = np.nan  # one band missing: the pixel is out
    pred[30, 40, :] = np.nan
    valid = np.ones(pred.shape[:2], dtype=bool)
    valid[:, :4] = False
    cloud = rng.random(valid.shape) < 0.4
    scores = score_arrays(pred, ref, valid=valid, regions={"reconstructed": cloud,
                                                           "clear": ~cloud})
    ok = np.isfinite(pred).all(-1) & np.isfinite(ref).all(-1) & valid
    windows = _window_valid(ok)
    for region, sel in (("all", ok), ("reconstructed", ok & cloud), ("clear", ok & ~cloud)):
        s = scores[region]
        assert s.overall.n_pixels == int(sel.sum())
        assert s.overall.n_ssim == int((sel & windows).sum())
        brute = _brute(pred[sel], ref[sel])
        assert s.overall.mae == pytest.approx(brute["mae"], rel=1e-12)
        assert s.overall.rmse == pytest.approx(brute["rmse"], rel=1e-12)
        for i, band in enumerate(scores.bands):
            # scikit-image's map on NaN-free copies, averaged where no window sees nodata.
            p = np.where(ok, pred[..., i], 0.0)
            r = np.where(ok, ref[..., i], 0.0)
            expected = _skimage_ssim_map(p, r)[sel & windows].mean()
            assert s.bands[band].ssim == pytest.approx(expected, rel=1e-10)
            assert s.bands[band].cc == pytest.approx(
                np.corrcoef(pred[sel][:, i], ref[sel][:, i])[0, 1], rel=1e-12)
    assert all(math.isfinite(v) for v in scores["all"].overall.to_dict().values()
               if v is not None)


def test_an_empty_region_reads_no_pixels_never_zero() -> None:
    pred, ref = _pair(np.random.default_rng(4), c=2)
    none = np.zeros(pred.shape[:2], dtype=bool)
    scores = score_arrays(pred, ref, regions={"reconstructed": ~none, "clear": none})
    empty = scores["clear"]
    assert empty.overall == Metrics(0, 0)
    assert all(v is None for k, v in empty.overall.to_dict().items() if k in KINDS)
    assert all(m.n_pixels == 0 for m in empty.bands.values())
    rows = [line for line in scores.to_markdown().splitlines() if line.startswith("| clear")]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:8] == ["no pixels"] * 6 and cells[8:] == ["0", "0"]
        assert "0.0000" not in row
    data = json.loads(json.dumps(scores.to_dict()))
    assert data["regions"]["clear"]["overall"]["mae"] is None
    assert data["regions"]["clear"]["overall"]["n_pixels"] == 0


def test_a_region_too_thin_for_ssim_has_pixels_but_no_ssim() -> None:
    pred, ref = _pair(np.random.default_rng(5), c=2)
    edge = np.zeros(pred.shape[:2], dtype=bool)
    edge[:, :R] = True  # every window of these pixels leaves the image
    s = score_arrays(pred, ref, regions={"reconstructed": edge})["reconstructed"]
    assert s.overall.n_pixels == int(edge.sum()) and s.overall.n_ssim == 0
    assert s.overall.ssim is None and s.overall.mae is not None
    assert s.overall.formatted("ssim") == "no pixels"


def test_perfect_and_constant_predictions() -> None:
    _, ref = _pair(np.random.default_rng(6), c=3)
    s = score_arrays(ref, ref)["all"].overall
    assert s.mae == 0 and s.psnr == pytest.approx(100.0) and s.ssim == pytest.approx(1.0)
    assert s.cc == pytest.approx(1.0) and s.sam_deg == pytest.approx(0.0, abs=1e-5)
    flat = np.full_like(ref, 0.2)
    m = score_arrays(flat, ref)["all"]
    assert m.bands["B1"].cc is None and m.overall.cc is None
    assert m.bands["B1"].formatted("cc") == "undefined"
    zero = np.zeros_like(ref)
    assert score_arrays(zero, ref)["all"].overall.sam_deg == pytest.approx(90.0)


def test_mask_and_quality_regions() -> None:
    mask = np.array([[0, 1, 2], [3, 255, 0]], dtype=np.uint8)
    regions = regions_from_mask(mask)
    assert regions["reconstructed"].tolist() == [[False, True, True], [True, False, False]]
    assert regions["clear"].tolist() == [[True, False, False], [False, False, True]]
    quality = np.array([[0, 1, 2, 255]], dtype=np.uint8)
    q = regions_from_quality(quality)
    assert q["reconstructed"].tolist() == [[False, True, True, False]]
    assert q["clear"].tolist() == [[True, False, False, False]]
    from decloud.inference.composite import (
        QUALITY_CLEAR,
        QUALITY_FEATHERED,
        QUALITY_RECONSTRUCTED,
    )

    assert QUALITY_CLEAR_CLASSES == (QUALITY_CLEAR,)
    assert QUALITY_RECONSTRUCTED_CLASSES == (QUALITY_RECONSTRUCTED, QUALITY_FEATHERED)


# Streamed equals whole ------------------------------------------------------------------


def _assert_same(got: Scores, expected: Scores) -> None:
    assert list(got.regions) == list(expected.regions)
    assert got.bands == expected.bands
    for region in expected.regions:
        for a, b in zip([got[region].overall, *got[region].bands.values()],
                        [expected[region].overall, *expected[region].bands.values()],
                        strict=True):
            assert (a.n_pixels, a.n_ssim) == (b.n_pixels, b.n_ssim)
            for kind in KINDS:
                x, y = getattr(a, kind), getattr(b, kind)
                assert (x is None) == (y is None), (region, kind)
                if y is not None:
                    assert x == pytest.approx(y, rel=1e-10, abs=1e-13), (region, kind)


def _write(path: Path, data: np.ndarray, bands: list[str], *, dtype: str = "int16",
           nodata: float | None = S2_NODATA, transform: object = None) -> Path:
    """``(H, W, C)`` to a GeoTIFF: decloud's int16 encoding, or as is (masks)."""
    h, w, c = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=dtype,
                       crs="EPSG:32631", nodata=nodata,
                       transform=transform or from_origin(600000, 5000000, 10, 10)) as dst:
        dst.write(np.moveaxis(data, -1, 0))
        for i, band in enumerate(bands):
            dst.set_band_description(i + 1, band)
    return path


def _raster_case(tmp_path: Path, seed: int = 7) -> tuple[Path, Path, Path, Path,
                                                         np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pred, ref = _pair(rng, h=70, w=45, c=3)
    pred[3:9, 30:44] = np.nan
    ref[50, :, 2] = np.nan
    bands = ["B04", "B03", "B02"]
    p_path = _write(tmp_path / "pred.tif", encode_s2(pred), bands)
    r_path = _write(tmp_path / "ref.tif", encode_s2(ref), bands)
    mask = np.zeros((70, 45, 1), dtype=np.uint8)
    mask[20:48, 5:30] = 1
    mask[60:, :] = 255
    m_path = _write(tmp_path / "mask.tif", mask, ["mask"], dtype="uint8", nodata=255)
    quality = np.where(mask == 1, 1, 0).astype(np.uint8)
    quality[15:20, 5:30] = 2
    q_path = _write(tmp_path / "quality.tif", quality, ["quality"], dtype="uint8", nodata=255)
    return (p_path, r_path, m_path, q_path, decode_s2(encode_s2(pred)),
            decode_s2(encode_s2(ref)), mask[..., 0])


@pytest.mark.parametrize("block", [16, 23, 32, 64, 1024])
def test_streamed_rasters_equal_the_whole_image(tmp_path: Path, block: int) -> None:
    p_path, r_path, m_path, q_path, pred, ref, mask = _raster_case(tmp_path)
    whole = score_arrays(pred, ref, bands=["B04", "B03", "B02"],
                         regions=regions_from_mask(mask))
    streamed = score_rasters(p_path, r_path, mask=m_path, block=block)
    _assert_same(streamed, whole)
    assert streamed["reconstructed"].overall.n_ssim > 0  # windows across block edges count
    with rasterio.open(q_path) as src:
        quality = src.read(1)
    whole_q = score_arrays(pred, ref, bands=["B04", "B03", "B02"],
                           regions=regions_from_quality(quality))
    _assert_same(score_rasters(p_path, r_path, quality=q_path, block=block), whole_q)


@pytest.mark.parametrize("block", [3, 7, 10, 19])
def test_accumulated_blocks_equal_the_whole_image(block: int) -> None:
    rng = np.random.default_rng(block)
    pred, ref = _pair(rng, h=37, w=29, c=3)
    ref[rng.random(ref.shape[:2]) < 0.01] = np.nan
    cloud = rng.random(ref.shape[:2]) < 0.5
    regions = {"reconstructed": cloud, "clear": ~cloud}
    acc = ScoreAccumulator(["a", "b", "c"])
    h, w = cloud.shape
    for row in range(0, h, block):
        for col in range(0, w, block):
            r0, c0 = max(0, row - R), max(0, col - R)
            r1, c1 = min(h, row + block + R), min(w, col + block + R)
            part = (slice(r0, r1), slice(c0, c1))
            core = (slice(row - r0, min(row + block, h) - r0),
                    slice(col - c0, min(col + block, w) - c0))
            acc.add(pred[part], ref[part], regions={k: v[part] for k, v in regions.items()},
                    core=core)
    _assert_same(acc.result(), score_arrays(pred, ref, bands=["a", "b", "c"],
                                            regions=regions))


def test_streaming_reads_one_block_and_its_halo_at_a_time(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from decloud.evaluation import metrics

    p_path, r_path, m_path, *_ = _raster_case(tmp_path)
    shapes: list[tuple[int, ...]] = []
    read = metrics._read_reflectance

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        out = read(*args, **kwargs)
        shapes.append(out.shape)
        return out

    monkeypatch.setattr(metrics, "_read_reflectance", spy)
    score_rasters(p_path, r_path, mask=m_path, block=16)
    # 70 x 45 px in 16 px blocks: 5 x 3 blocks, each read with at most 5 px on each side.
    assert len(shapes) == 2 * 15
    assert max(s[0] for s in shapes) == max(s[1] for s in shapes) == 16 + 2 * R


def test_rasters_on_other_grids_or_bands_are_refused(tmp_path: Path) -> None:
    p_path, r_path, m_path, _, pred, _, _ = _raster_case(tmp_path)
    shifted = _write(tmp_path / "shifted.tif", encode_s2(pred), ["B04", "B03", "B02"],
                     transform=from_origin(600010, 5000000, 10, 10))
    with pytest.raises(GridError, match=r"shifted\.tif.*grid"):
        score_rasters(p_path, shifted)
    small_mask = _write(tmp_path / "small.tif", np.zeros((10, 10, 1), np.uint8), ["m"],
                        dtype="uint8", nodata=255)
    with pytest.raises(GridError, match=r"small\.tif"):
        score_rasters(p_path, r_path, mask=small_mask)
    other = _write(tmp_path / "other.tif", encode_s2(pred), ["B08", "B03", "B02"])
    with pytest.raises(EvaluationError, match=r"other\.tif \[bands\]"):
        score_rasters(p_path, other)
    with pytest.raises(MissingBandError, match=r"other\.tif \[B04\]"):
        score_rasters(p_path, other, bands=["B04"])
    # Choosing the common bands works (B2 and B02 are one band).
    s = score_rasters(p_path, other, bands=["B3", "B02"])
    assert s.bands == ("B03", "B02")
    with pytest.raises(EvaluationError, match="not both"):
        score_rasters(p_path, r_path, mask=m_path, quality=m_path)


def test_integer_rasters_of_unknown_scale_are_refused(tmp_path: Path) -> None:
    p_path, _, _, _, pred, _, _ = _raster_case(tmp_path)
    bands = ["B04", "B03", "B02"]
    # A uint16 L2A-like reference (DN = 10000 x reflectance + offset) without scale tags.
    assert np.nanmin(pred) > -1 and np.nanmax(pred) < 5  # the DN fit in uint16, never 0
    dn = np.where(np.isnan(pred), 0, np.rint(pred * 10000) + 10000).astype(np.uint16)
    raw = _write(tmp_path / "raw.tif", dn, bands, dtype="uint16", nodata=0)
    with pytest.raises(EvaluationError, match=r"raw\.tif \[scale\].*uint16"):
        score_rasters(p_path, raw)
    with pytest.raises(EvaluationError, match=r"raw\.tif \[scale\]"):
        read_reflectance(raw, ["B04"])
    # int16 with another nodata is not decloud's encoding either.
    other = _write(tmp_path / "other.tif", encode_s2(pred), bands, nodata=None)
    with pytest.raises(EvaluationError, match=r"other\.tif \[scale\].*int16"):
        score_rasters(p_path, other)
    # With its scale and offset tagged, the same raster reads as the reflectance.
    with rasterio.open(raw, "r+") as dst:
        dst.scales = [1e-4] * 3
        dst.offsets = [-1.0] * 3
    names, got = read_reflectance(raw)
    assert names == tuple(bands)
    np.testing.assert_allclose(got, pred, atol=1e-7)
    _assert_same(score_rasters(p_path, raw), score_arrays(pred, got, bands=bands))


def test_float_rasters_are_read_with_their_nodata(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    pred, ref = _pair(rng, h=20, w=20, c=2)
    ref[2, 3] = -1.0
    p_path = _write(tmp_path / "p.tif", pred.astype(np.float32), ["B02", "B03"],
                    dtype="float32", nodata=-1.0)
    r_path = _write(tmp_path / "r.tif", ref.astype(np.float32), ["B02", "B03"],
                    dtype="float32", nodata=-1.0)
    got = score_rasters(p_path, r_path)
    ref_nan = ref.astype(np.float32).astype(np.float64)
    ref_nan[2, 3] = np.nan
    _assert_same(got, score_arrays(pred.astype(np.float32).astype(np.float64), ref_nan,
                                   bands=["B02", "B03"]))
    assert got["all"].overall.n_pixels == 399
