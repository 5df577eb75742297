"""Issue 28, "nothing lost, no surprises": no silent overwrites, honest errors, memory bounds."""

from __future__ import annotations

import pytest

from superres.cli import main
from superres.io import write_image


@pytest.mark.parametrize("command", ["degrade", "resize"])
def test_degrade_and_resize_refuse_two_inputs_with_one_output(tmp_path, photos, command, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "photo.png", photos["chelsea"][:64, :64])
    write_image(src / "photo.jpg", photos["chelsea"][:64, :64])
    assert main([command, str(src), str(tmp_path / "out"), "--scale", "4", "-q"]) == 1
    err = capsys.readouterr().err
    assert "photo.jpg" in err and "photo.png" in err and "both be written" in err
    assert not (tmp_path / "out").exists()
