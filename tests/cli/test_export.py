"""``decloud export --format savedmodel`` prints every OTBTF command, with absolute paths."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from decloud.cli.export import export
from decloud.errors import MarginTooSmallError
from decloud.models import build, get_config
from decloud.models.card import CARD_FILE, model_card, write_card


def test_default_efield_is_the_exporters() -> None:
    from decloud.models.otbtf import DEFAULT_EFIELD

    option = next(p for p in export.params if p.name == "efield")
    assert option.default == DEFAULT_EFIELD


def test_prints_the_10m_and_20m_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    config = get_config("dsen2cr")
    config = config.model_copy(update={"network": config.network.model_copy(
        update={"features": 8, "blocks": 2})})
    model, spec = build(config)
    keras_file = tmp_path / "run" / "model.keras"
    keras_file.parent.mkdir()
    model.save(keras_file)
    write_card(keras_file.parent / CARD_FILE, model_card(spec, config))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(export, [str(keras_file), "--format", "savedmodel", "--out", "sm",
                                    "--no-check"])
    assert result.exit_code == 0, result.output
    lines = {line.split(": ", 1)[0].strip(): line.split(": ", 1)[1]
             for line in result.output.splitlines() if "otbcli_TensorflowModelServe" in line}
    assert set(lines) == {"s2_target", "s2_20m_target"}
    for key, line in lines.items():
        words = shlex.split(line)
        assert words[words.index("-model.dir") + 1] == str(tmp_path / "sm")
        assert words[words.index("-output.names") + 1].startswith(f"{key}_crop")
    # Below half the receptive field (16 px): refused, nothing written.
    result = runner.invoke(export, [str(keras_file), "--format", "savedmodel", "--out", "sm2",
                                    "--margin", "6", "--no-check"])
    assert isinstance(result.exception, MarginTooSmallError)
    assert "minimum is 8" in str(result.exception) and not (tmp_path / "sm2").exists()
