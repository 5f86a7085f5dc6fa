"""Method settings as text (counterfactual/options.py) and the registry's option set."""

from dataclasses import dataclass

import pytest

from medcf.counterfactual.options import describe_settings, parse_setting, settings_of
from medcf.errors import MedcfError


@dataclass(frozen=True)
class Cfg:
    rate: float = 0.5
    steps: int = 3
    on: bool = False
    name: str = "a"
    cap: float | None = 1.0
    layers: tuple[int, ...] | None = None


def test_values_are_typed_by_the_field():
    assert parse_setting(Cfg, "rate=2") == ("rate", 2.0) and isinstance(parse_setting(Cfg, "rate=2")[1], float)
    assert parse_setting(Cfg, "steps=7") == ("steps", 7)
    assert parse_setting(Cfg, "on=yes") == ("on", True) and parse_setting(Cfg, "on=0") == ("on", False)
    assert parse_setting(Cfg, "name=none") == ("name", "none")       # str is not optional here
    assert parse_setting(Cfg, "cap=none") == ("cap", None)
    assert parse_setting(Cfg, "cap=inf") == ("cap", float("inf"))
    assert parse_setting(Cfg, "layers=0, 2,5") == ("layers", (0, 2, 5))
    assert parse_setting(Cfg, "rate=1e-3") == ("rate", 0.001)


@pytest.mark.parametrize("text, words", [("steps=1.5", ("steps", "int")), ("on=maybe", ("on", "bool")),
                                         ("rate=abc", ("rate", "float")), ("nope=1", ("nope", "rate")),
                                         ("rate", ("FIELD=VALUE",)), ("rate=nan", ("rate",))])
def test_bad_settings_are_one_line_errors_naming_the_field(text, words):
    with pytest.raises(MedcfError) as e:
        parse_setting(Cfg, text)
    assert e.value.param == "set" and "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_listing_has_every_field_with_type_and_default():
    lines = describe_settings(Cfg)
    assert len(lines) == len(settings_of(Cfg)) == 6
    assert lines[4].split() == ["cap", "float", "|", "None", "(default", "1.0)"]
    assert "tuple[int, ...] | None" in lines[5]


def test_registry_options_are_the_config_fields_plus_extras():
    from dataclasses import fields

    from medcf.counterfactual.latent_probe import LatentProbeConfig
    from medcf.counterfactual.latent_shift import LatentShiftConfig
    from medcf.counterfactual.registry import METHODS

    shift, probe = METHODS["latent-shift"], METHODS["latent-probe"]
    assert shift.config_class is LatentShiftConfig and probe.config_class is LatentProbeConfig
    assert set(shift.accepts()) == {f.name for f in fields(LatentShiftConfig)}
    assert set(probe.accepts()) == {f.name for f in fields(LatentProbeConfig)} | {
        "encoder", "probe_dir", "fit_samples", "seed", "project_steps", "max_steps"}
