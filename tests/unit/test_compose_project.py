from __future__ import annotations

import pytest

from composecache.compose import project

CONFIG_OUTPUT = """\
name: shop
services:
  api:
    build:
      context: /src/shop
      dockerfile: Dockerfile
      target: api
      cache_from:
        - type=local,src=/own
      args:
        FLAG: "yes"
        MODE: "0755"
    image: registry.example.com/shop/api:dev
    x-composecache:
      mode: min
      scope: "on"
  db:
    image: postgres:16
    environment:
      PASSWORD: $$secret
"""


def test_libyaml_and_ruamel_read_compose_config_output_alike() -> None:
    assert project.load_config_output(CONFIG_OUTPUT) == project.load_yaml(CONFIG_OUTPUT)


def test_model_from_config_output() -> None:
    model = project.model_from_config_output(CONFIG_OUTPUT)
    assert model.name == "shop"
    api, db = model.services["api"], model.services["db"]
    assert api.builds and not db.builds
    assert api.build is not None and api.build["target"] == "api"
    settings, errors = project.service_settings(api)
    assert errors == [] and settings.mode == "min" and settings.scope == "on"


@pytest.mark.parametrize("text", ["services: [", "- a\n- b\n", ""])
def test_bad_yaml_is_a_model_error_not_a_traceback(text: str) -> None:
    with pytest.raises(project.ModelError, match=r"."):
        project.model_from_config_output(text)
