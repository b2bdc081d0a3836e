"""Config loading: strict types, unknown keys, dotted overrides, errors naming key and file."""

from __future__ import annotations

import pytest
import yaml

from distdiff.config import ConfigError, RunConfig, dump_yaml, load_config, load_yaml


def write(tmp_path, data) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_yaml_and_overrides_resolve(tmp_path):
    path = write(tmp_path, {"name": "x", "ldm": {"preset": "tiny", "optim": {"lr": "3e-4"}}})
    cfg = load_config(RunConfig, path, ["stage2.steps=7", "ddgan.g_optim.betas=[0.5, 0.99]"])
    assert cfg.name == "x" and cfg.ldm.preset == "tiny"
    assert cfg.ldm.optim.lr == pytest.approx(3e-4)  # YAML reads 3e-4 as a string; floats accept it
    assert cfg.stage2.steps == 7
    assert cfg.ddgan.g_optim.betas == (0.5, 0.99)
    assert cfg.ddgan.d_optim.betas == (0.5, 0.9)  # the DDGAN paper's Adam betas by default


def test_resolved_dump_loads_back_identically(tmp_path):
    cfg = load_config(RunConfig, None, ["ldm.class_conditional=true", "distributed.deepspeed={a: 1}"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(RunConfig, path) == cfg


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"ldm": {"presett": "tiny"}}, "unknown key 'ldm.presett'"),
        ({"stage2": {"steps": "many"}}, "'stage2.steps' must be an integer"),
        ({"stage2": {"steps": 1.5}}, "'stage2.steps' must be an integer"),
        ({"ldm": {"enabled": "yes"}}, "'ldm.enabled' must be true or false"),
        ({"ldm": {"schedule": "quadratic"}}, "'ldm.schedule' = 'quadratic' is not one of"),
        ({"ddgan": {"g_optim": {"betas": [0.5]}}}, "'ddgan.g_optim.betas' needs 2 items"),
        ({"data": {"source": "embedded-cifar"}}, "data.source 'embedded-cifar'"),
        ({"ldm": {"enabled": False}, "ddgan": {"enabled": False}}, "all disabled"),
    ],
)
def test_bad_configs_name_the_key_and_the_file(tmp_path, data, needle):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(RunConfig, None, ["stage2.steps"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_partial_nested_section_keeps_the_fields_defaults(tmp_path):
    """Setting only the DDGAN's learning rate keeps its Adam betas (0.5, 0.9) and its no-clipping default."""
    path = write(tmp_path, {"ddgan": {"g_optim": {"lr": 1e-3}}, "stage2": {"steps": 7}})
    cfg = load_config(RunConfig, path, ["ddgan.d_optim.lr=2e-3"])
    assert cfg.ddgan.g_optim.lr == 1e-3 and cfg.ddgan.g_optim.betas == (0.5, 0.9)
    assert cfg.ddgan.d_optim.lr == 2e-3 and cfg.ddgan.d_optim.betas == (0.5, 0.9)
    assert cfg.ddgan.g_optim.grad_clip == cfg.ddgan.d_optim.grad_clip == 0.0
    assert cfg.stage2.steps == 7 and cfg.stage2.batch_size == RunConfig().stage2.batch_size


def test_config_knows_every_embedded_dataset():
    from distdiff.config.schema import EMBEDDED_SOURCES
    from distdiff.data.embedded import EMBEDDED_DATASETS

    assert set(EMBEDDED_SOURCES) == set(EMBEDDED_DATASETS)
    for dataset in EMBEDDED_DATASETS.values():
        images, labels = dataset.load(12, 0)
        assert images.shape[1:] == dataset.image_shape and len(images) == len(labels) == dataset.size(12)
        assert int(labels.max()) < dataset.num_classes
