"""pumpwatch.toml: every key optional; bad keys, types and files are errors that name the key."""

from __future__ import annotations

import pytest

from pumpwatch import config


def test_defaults_work_without_a_file():
    cfg = config.load(None)
    assert cfg.data_dir == "./pumpwatch-data" and cfg.log.fsync_interval == 1.0
    assert set(cfg.venues) == set(config.VENUE_IDS) and all(v.enabled for v in cfg.venues.values())
    assert cfg.upbit.enabled and cfg.metrics_address == "127.0.0.1:9464"


def test_a_file_sets_what_it_names(tmp_path):
    p = tmp_path / "pumpwatch.toml"
    p.write_text(
        'data_dir = "/data"\n[log]\nfsync_interval = 0\n[venues.okx-swap]\nsymbols = ["BTC-USDT-SWAP"]\n'
        'ws_url = "ws://127.0.0.1:9000"\n[venues.phemex-spot]\nenabled = false\n[upbit]\ninterval_s = 2.5\n'
    )
    cfg = config.load(p)
    assert cfg.data_dir == "/data" and cfg.log.fsync_interval == 0.0
    assert (
        cfg.venues["okx-swap"].symbols == ("BTC-USDT-SWAP",) and cfg.venues["okx-swap"].ws_url == "ws://127.0.0.1:9000"
    )
    assert not cfg.venues["phemex-spot"].enabled and cfg.venues["binance-spot"].enabled
    assert cfg.upbit.watcher_settings()["interval_s"] == 2.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("dta_dir = 'x'", "unknown setting 'dta_dir'"),
        ("[log]\nfsync = 1", "unknown setting log.fsync"),
        ("[log]\nfsync_interval = 'fast'", "log.fsync_interval must be a number"),
        ("[log]\nsegment_max_bytes = -5", "log.segment_max_bytes must be a whole number"),
        ("[venues.binance]\nenabled = true", "unknown venue [venues.binance]"),
        ("[venues.okx-spot]\nenabled = 'yes'", "venues.okx-spot.enabled must be true or false"),
        ("[venues.okx-spot]\nsymbols = 'BTC-USDT'", "must be a list of strings"),
        ("metrics_address = '0.0.0.0:9464'", "served on loopback only"),
        ("[upbit]\nproxies = [1]", "upbit.proxies must be a list of strings"),
        ("this is not toml", "is not valid TOML"),
        ("[log]\nengine = 'python'", "log.engine must be one of 'rust', 'purepy'"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, text, message):
    p = tmp_path / "pumpwatch.toml"
    p.write_text(text)
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        config.load(p)


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")
