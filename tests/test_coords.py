"""GCJ-02 / BD-09 conversions: published test vector, round trips in metres, out-of-China identity."""

import numpy as np
import pytest
from pyproj import Geod

from geo.spatial import coords

GEOD = Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def china_points():
    """10,000 random WGS-84 points over mainland China's extent (inside the published rectangle)."""
    rng = np.random.default_rng(20240601)
    lon = rng.uniform(73.5, 135.0, 10_000)
    lat = rng.uniform(18.0, 53.5, 10_000)
    return lon, lat


def _metres(lon1, lat1, lon2, lat2):
    return GEOD.inv(lon1, lat1, lon2, lat2)[2]


def test_public_test_vector():
    lon, lat = coords.wgs84_to_gcj02(120.0, 40.0)
    assert lon == pytest.approx(120.00567568355486, abs=1e-9)
    assert lat == pytest.approx(40.0013047896019, abs=1e-9)


def test_gcj_offset_is_hundreds_of_metres(china_points):
    lon, lat = china_points
    glon, glat = coords.wgs84_to_gcj02(lon, lat)
    d = _metres(lon, lat, glon, glat)
    assert d.min() > 1.0
    assert d.max() < 1500.0
    assert 100.0 < np.median(d) < 800.0


@pytest.mark.parametrize("forward, inverse", [(coords.wgs84_to_gcj02, coords.gcj02_to_wgs84),
                                              (coords.wgs84_to_bd09, coords.bd09_to_wgs84)], ids=["gcj02", "bd09"])
def test_wgs_round_trip(china_points, forward, inverse):
    """WGS-84 → GCJ-02 / BD-09 and back (the inverse is iterative) lands within 1e-7° of the start."""
    lon, lat = china_points
    back_lon, back_lat = inverse(*forward(lon, lat))
    assert np.max(_metres(lon, lat, back_lon, back_lat)) < 0.5
    assert np.max(np.abs(back_lon - lon)) < 1e-7
    assert np.max(np.abs(back_lat - lat)) < 1e-7


def test_gcj_bd_round_trip(china_points):
    glon, glat = coords.wgs84_to_gcj02(*china_points)
    back_lon, back_lat = coords.bd09_to_gcj02(*coords.gcj02_to_bd09(glon, glat))
    assert np.max(np.abs(back_lon - glon)) < 1e-7
    assert np.max(np.abs(back_lat - glat)) < 1e-7


def test_bd09_is_composition(china_points):
    lon, lat = china_points
    direct = coords.wgs84_to_bd09(lon, lat)
    composed = coords.gcj02_to_bd09(*coords.wgs84_to_gcj02(lon, lat))
    np.testing.assert_array_equal(direct[0], composed[0])
    np.testing.assert_array_equal(direct[1], composed[1])


def test_out_of_china_identity():
    lon = np.array([2.35, -74.0, 151.2, 139.69, 100.0])
    lat = np.array([48.85, 40.7, -33.87, 35.69, 60.0])  # Paris, New York, Sydney, Tokyo, Siberia
    assert coords.out_of_china(lon, lat).all()
    for fwd in (coords.wgs84_to_gcj02, coords.gcj02_to_wgs84):
        out_lon, out_lat = fwd(lon, lat)
        np.testing.assert_array_equal(out_lon, lon)
        np.testing.assert_array_equal(out_lat, lat)
    assert not coords.out_of_china(116.4, 39.9)


def test_mixed_inside_and_outside():
    lon = np.array([116.4, 2.35])
    lat = np.array([39.9, 48.85])
    glon, glat = coords.wgs84_to_gcj02(lon, lat)
    assert glon[0] != lon[0] and glat[0] != lat[0]
    assert glon[1] == lon[1] and glat[1] == lat[1]


def test_scalars_and_shapes():
    out = coords.wgs84_to_gcj02(120.0, 40.0)
    assert isinstance(out[0], float) and isinstance(out[1], float)
    for fn in (coords.gcj02_to_wgs84, coords.gcj02_to_bd09, coords.bd09_to_gcj02,
               coords.wgs84_to_bd09, coords.bd09_to_wgs84):
        lon, lat = fn(116.4, 39.9)
        assert isinstance(lon, float) and isinstance(lat, float)
    grid_lon, grid_lat = np.meshgrid(np.linspace(110, 120, 4), np.linspace(25, 35, 3))
    glon, glat = coords.wgs84_to_gcj02(grid_lon, grid_lat)
    assert glon.shape == glat.shape == (3, 4)
    # list input and element-wise agreement with scalar calls
    llon, llat = coords.wgs84_to_bd09([116.4, 121.47], [39.9, 31.23])
    assert llon[1] == coords.wgs84_to_bd09(121.47, 31.23)[0]
    assert llat[0] == coords.wgs84_to_bd09(116.4, 39.9)[1]


def test_nan_passes_through():
    lon, lat = coords.gcj02_to_wgs84(np.array([np.nan, 116.4]), np.array([np.nan, 39.9]))
    assert np.isnan(lon[0]) and np.isnan(lat[0])
    assert np.isfinite(lon[1]) and np.isfinite(lat[1])


@pytest.mark.parametrize("name", ["wgs84", "cgcs2000", "WGS84", "CGCS2000"])
def test_to_wgs84_identity_systems(name):
    lon, lat = coords.to_wgs84(np.array([116.4]), np.array([39.9]), name)
    assert lon[0] == 116.4 and lat[0] == 39.9


def test_to_wgs84_dispatch(china_points):
    lon, lat = china_points
    g = coords.wgs84_to_gcj02(lon, lat)
    b = coords.wgs84_to_bd09(lon, lat)
    for name, src in (("gcj02", g), ("GCJ-02", g), ("bd09", b), ("BD-09", b)):
        wlon, wlat = coords.to_wgs84(*src, name)
        assert np.max(_metres(lon, lat, wlon, wlat)) < 0.5
    with pytest.raises(ValueError):
        coords.to_wgs84(116.4, 39.9, "epsg:3857")
