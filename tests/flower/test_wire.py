"""The wire format: type names, versions, field types, and the Flower record mapping."""

from __future__ import annotations

import numpy as np
import pytest

from deploy import JOIN, MESSAGE_TYPES, TRAIN, WIRE_VERSION, WireFormatError, WireMessage
from deploy._transport import from_record_dict, message_size, to_record_dict
from deploy._wire import flower_message_type, wire_type_of


def test_every_type_maps_to_a_valid_flower_message_type():
    from flwr.app.metadata import validate_message_type

    for wire_type in MESSAGE_TYPES:
        flower_type = flower_message_type(wire_type)
        assert validate_message_type(flower_type), flower_type
        assert wire_type_of(flower_type) == wire_type


def test_round_trip_through_flower_records_keeps_bytes_and_arrays_exact():
    params = np.random.default_rng(0).normal(size=17).astype(np.float32)
    blob = bytes(range(256)) * 3
    message = WireMessage(
        TRAIN, fields={"round": 3, "blob": blob, "weight": 0.25, "ok": True}, arrays={"p": params}
    )
    back = from_record_dict(to_record_dict(message), expected_type=TRAIN)
    assert back.integer("round") == 3
    assert back.blob("blob") == blob
    assert back.number("weight") == 0.25
    assert back.flag("ok") is True
    assert back.array("p").dtype == np.float32
    assert np.array_equal(back.array("p"), params)
    assert message_size(back) == message_size(message) > len(blob)


def test_refuses_unknown_types_other_versions_and_wrong_field_types():
    with pytest.raises(WireFormatError, match="unknown message type"):
        WireMessage("secagg.v1.nonsense")
    with pytest.raises(WireFormatError, match="wire version"):
        WireMessage(JOIN, version=WIRE_VERSION + 1)
    with pytest.raises(WireFormatError, match="not finite"):
        WireMessage(JOIN, fields={"x": float("nan")})
    with pytest.raises(WireFormatError, match="float array"):
        WireMessage(JOIN, arrays={"ids": np.arange(3)})
    message = WireMessage(JOIN, fields={"n": 3, "flag": True})
    with pytest.raises(WireFormatError, match="wrong type"):
        message.text("n")
    with pytest.raises(WireFormatError, match="must be an int"):
        message.integer("flag")
    with pytest.raises(WireFormatError, match="missing field"):
        message.blob("absent")


def test_a_reply_of_another_type_is_refused():
    record = to_record_dict(WireMessage(JOIN, fields={"role": "hospital"}))
    with pytest.raises(WireFormatError, match=r"expected a secagg\.v1\.train"):
        from_record_dict(record, expected_type=TRAIN)


def test_run_config_overrides_split_outside_brackets_and_quotes():
    from deploy._driver import split_overrides

    text = "dp=off, secagg.coeff_mod_bit_sizes=[60,40,60],dataset.data_dir='/a,b'\nchain=anvil"
    assert split_overrides(text) == (
        "dp=off",
        "secagg.coeff_mod_bit_sizes=[60,40,60]",
        "dataset.data_dir='/a,b'",
        "chain=anvil",
    )


def test_settings_from_the_flower_run_config_of_pyproject():
    import tomllib
    from pathlib import Path

    from deploy import DeploymentSettings, SettingsError

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    run_config = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"]
    settings = DeploymentSettings.from_run_config(run_config)
    assert "secagg=ckks" in settings.overrides
    assert settings.hospitals == 4
    assert settings.nodes == 5
    with pytest.raises(SettingsError, match="missing"):
        DeploymentSettings.from_run_config({"overrides": "dp=off"})
    with pytest.raises(SettingsError, match="stage_timeout_s"):
        DeploymentSettings.from_run_config({**run_config, "stage-timeout": -1.0})
