"""The one YAML reader: ``base`` files merged key by key, cycles caught, errors naming the key path."""

from __future__ import annotations

import pytest
from pydantic import Field

from superres.config import ConfigError, Strict, read_yaml, validate


class Inner(Strict):
    size: int = Field(1, gt=0)


class Outer(Strict):
    name: str
    inner: Inner = Field(default_factory=Inner)
    items: list[Inner] = Field(default_factory=list)


def test_read_yaml_merges_bases_relative_to_each_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "base.yaml").write_text("name: base\ninner: {size: 2}\nitems: [{size: 1}]\n")
    (tmp_path / "a" / "mid.yaml").write_text("base: ../base.yaml\nname: mid\n")
    (tmp_path / "a" / "top.yaml").write_text("base: mid.yaml\nitems: [{size: 3}]\n")
    assert read_yaml(tmp_path / "a" / "top.yaml") == {"name": "mid", "inner": {"size": 2}, "items": [{"size": 3}]}


def test_read_yaml_reports_cycles_and_non_mappings(tmp_path):
    (tmp_path / "x.yaml").write_text("base: y.yaml\n")
    (tmp_path / "y.yaml").write_text("base: x.yaml\n")
    with pytest.raises(ConfigError, match="'base' files include each other"):
        read_yaml(tmp_path / "x.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_yaml(tmp_path / "list.yaml")


def test_validate_names_the_file_and_every_key_path_in_one_line():
    with pytest.raises(ConfigError) as e:
        validate(Outer, {"name": "n", "inner": {"size": 0}, "items": [{}, {"sise": 2}], "extra": 1}, "f.yaml")
    message = str(e.value)
    assert message.startswith("f.yaml: ") and "\n" not in message
    for key in ("inner.size: Input should be greater than 0", "items.1.sise: Extra inputs", "extra: Extra inputs"):
        assert key in message
    with pytest.raises(ConfigError, match=r"^f\.yaml: data\.real\.inner\.size: "):
        validate(Outer, {"name": "n", "inner": {"size": -1}}, "f.yaml", ("data", "real"))
