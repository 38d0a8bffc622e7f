"""``build --help`` describes the loader as it is: strongly typed networks on TensorRT 10 and 11."""

from click.testing import CliRunner

from chase_deploy.cli import main


def test_build_help_says_strongly_typed_without_builder_flags():
    result = CliRunner().invoke(main, ["build", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "strongly typed on TensorRT 10 and 11 alike" in text
    assert "no builder precision flags are set" in text
    assert "TensorRT 10 gets builder precision flags" not in text
