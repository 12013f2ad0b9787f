"""README.md's settings table is generated from ``app.settings.Settings`` (``python -m app.settings_doc``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from app.settings import Settings
from app.settings_doc import (
    END,
    START,
    current_block,
    env_var_names,
    generated_block,
    main,
    render_default,
    render_table,
    undocumented_fields,
    updated_readme,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_has_a_description() -> None:
    assert undocumented_fields() == [], "add Field(description=...) in app/settings.py"


def test_readme_table_is_the_generated_one() -> None:
    readme = README.read_text(encoding="utf-8")
    assert current_block(readme) == generated_block(), (
        "README.md's settings table differs from app/settings.py: run `python -m app.settings_doc`"
    )


def test_every_setting_is_a_row_with_its_environment_variable() -> None:
    table = render_table()
    for name, field in Settings.model_fields.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        for var in env_var_names(name, field):
            assert f"`{var}`" in row
    assert "| `api_port` | `PORT` |" in table  # the one setting with its own alias
    assert "| `database_url` | `HRA_DATABASE_URL` | `sqlite:///<HRA_VAR_DIR>/hra.db` |" in table


def test_defaults_are_rendered_readably() -> None:
    fields = Settings.model_fields
    assert render_default("quota_stored_bytes", fields["quota_stored_bytes"]) == "10737418240 (10 GiB)"
    assert render_default("quota_train_seconds_per_day", fields["quota_train_seconds_per_day"]) == "14400 (4 h)"
    assert render_default("s3_secure", fields["s3_secure"]) == "`false`"
    assert render_default("s3_region", fields["s3_region"]) == "unset"
    assert render_default("beam_size", fields["beam_size"]) == "5"


class _Probe(Settings):
    extra_setting: int = Field(default=3, description="a | pipe is escaped")
    undocumented: str = "x"


def test_a_new_field_changes_the_table_and_the_check_fails(tmp_path: Path) -> None:
    assert "a \\| pipe is escaped" in render_table(_Probe)
    assert undocumented_fields(_Probe) == ["undocumented"]
    readme = f"# title\n\n{START}\nold\n{END}\n\nafter\n"
    new = updated_readme(readme)
    assert new.startswith("# title\n\n") and new.endswith("\n\nafter\n") and render_table() in new
    path = tmp_path / "README.md"
    path.write_text(readme, encoding="utf-8")
    assert main(["--readme", str(path), "--check"]) == 1
    assert main(["--readme", str(path)]) == 0 and path.read_text(encoding="utf-8") == new
    assert main(["--readme", str(path), "--check"]) == 0
