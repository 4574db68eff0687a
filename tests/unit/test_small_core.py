import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.gate import decide
from shared.core.naming import item_id_from_path, item_id_problem, labeling_name
from shared.errors import ConfigurationError
from shared.settings import load_settings


@given(st.text(min_size=1, max_size=200).filter(lambda s: item_id_problem(s) is None))
def test_labeling_names_map_back_to_the_item_id(item_id):
    name = labeling_name("20260101T000000Z-abc", item_id, ".png")
    assert item_id_from_path(f"AmlDatastore://ds/labeling-input/{name}") == item_id
    assert name.count("/") == 1


@pytest.mark.parametrize("bad", ["", "a/b", "a\\b", "..", "x" * 257, "a\x00b"])
def test_bad_item_ids_have_a_reason(bad):
    assert item_id_problem(bad)


def test_gate():
    assert decide(0.8, None).passed
    assert decide(0.8, 0.8).passed
    assert not decide(0.79, 0.8).passed
    assert decide(0.79, 0.8, tolerance=0.02).passed
    assert not decide(float("nan"), 0.1).passed


def test_settings_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("AL_BATCH_SIZE", "lots")
    with pytest.raises(ConfigurationError, match="setting AL_BATCH_SIZE is invalid"):
        load_settings()
    monkeypatch.setenv("AL_BATCH_SIZE", "10")
    monkeypatch.setenv("AL_STAGES", "selector_timer,nope")
    with pytest.raises(ConfigurationError, match=r"AL_STAGES.*nope"):
        load_settings()
    monkeypatch.setenv("AL_STAGES", "selector_timer")
    s = load_settings()
    assert s.batch_size == 10 and s.stage_names == ("selector_timer",)
