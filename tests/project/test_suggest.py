"""Unknown keys list the valid ones at that place, through discriminated unions too."""

from __future__ import annotations

from tidegate.project.models import ProjectConfig, SourceConfig, SyncConfig
from tidegate.project.suggest import keys_at, unknown_key_message


def test_keys_inside_a_discriminated_union_member() -> None:
    assert "table" in keys_at(SyncConfig, ("destination", "postgres"))
    assert "key_template" in keys_at(SyncConfig, ("destination", "redis"))
    message = unknown_key_message(SyncConfig, ("destination", "postgres", "tabel"))
    assert "did you mean 'table'?" in message


def test_keys_of_a_source_by_its_type_and_of_nested_models() -> None:
    assert "drop_folder" in keys_at(SourceConfig, ("stream",))
    assert "schema" in keys_at(SourceConfig, ("postgres",))  # the alias, as written in YAML
    assert "classification" in keys_at(SourceConfig, ("file", "columns", "email"))
    assert "port" in keys_at(ProjectConfig, ("serve",))


def test_a_lost_walk_gives_no_list_but_still_a_message() -> None:
    assert keys_at(ProjectConfig, ("nothing", "here")) == []
    assert unknown_key_message(ProjectConfig, ("nothing", "zzz")) == "unknown key 'zzz'"
