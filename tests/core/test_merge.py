"""The one hyperparameter merge (design section 4): layers, precedence, deep merge, sources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detflow import ConfigError, HparamLayers, Precedence, Source, merge_hparams
from detflow._core.merge import Replacement, _owner
from detflow._core.paths import flatten
from detflow._core.paths import get_path as _get

LAYER_NAMES = ("default", "config", "code", "override", "searcher")


def layers_setting(key: str) -> HparamLayers:
    """Each layer gives ``key`` its own name as the value."""
    return HparamLayers(**{name: {key: name} for name in LAYER_NAMES})


# --- precedence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("present", "winner"),
    [
        (("default",), "default"),
        (("default", "config"), "config"),
        (("default", "config", "code"), "code"),
        (("config", "code", "override"), "override"),
        (("default", "config", "code", "override", "searcher"), "searcher"),
        (("code", "searcher"), "searcher"),
        (("default", "code"), "code"),
    ],
)
def test_precedence_default_config_code_override_searcher(
    present: tuple[str, ...], winner: str
) -> None:
    merged = merge_hparams(HparamLayers(**{name: {"lr": name} for name in present}))
    assert merged.values == {"lr": winner}
    assert merged.sources == {"lr": Source(winner)}


def test_precedence_config_swaps_config_and_code_only() -> None:
    both = HparamLayers(default={"lr": 0}, config={"lr": 1}, code={"lr": 2})
    assert merge_hparams(both, "code").values == {"lr": 2}
    assert merge_hparams(both, Precedence.CODE).sources == {"lr": Source.CODE}
    assert merge_hparams(both, "config").values == {"lr": 1}
    assert merge_hparams(both, Precedence.CONFIG).sources == {"lr": Source.CONFIG}
    # command line and searcher still win under either precedence
    for precedence in ("code", "config"):
        assert merge_hparams(layers_setting("lr"), precedence).values == {"lr": "searcher"}
        no_searcher = HparamLayers(config={"lr": 1}, code={"lr": 2}, override={"lr": 3})
        assert merge_hparams(no_searcher, precedence).sources == {"lr": Source.OVERRIDE}


def test_default_precedence_is_code() -> None:
    assert merge_hparams(HparamLayers(config={"a": 1}, code={"a": 2})).values == {"a": 2}


@pytest.mark.parametrize("bad", ["yaml", "CODE", "", None, 1])
def test_unknown_precedence_is_a_config_error_naming_the_key(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        merge_hparams(HparamLayers(), bad)
    assert str(info.value).startswith(f"hparams_precedence = {bad!r} is not valid")
    assert "code, config" in str(info.value)


# --- deep merge ----------------------------------------------------------------------------


def test_nested_dicts_merge_key_by_key() -> None:
    merged = merge_hparams(
        HparamLayers(
            default={"opt": {"name": "sgd", "momentum": 0.9, "nesterov": False}},
            config={"opt": {"momentum": 0.8, "sched": {"kind": "cos", "warmup": 10}}},
            code={"opt": {"sched": {"warmup": 20}}},
            override={"opt": {"name": "adam"}},
        )
    )
    assert merged.values == {
        "opt": {
            "name": "adam",
            "momentum": 0.8,
            "nesterov": False,
            "sched": {"kind": "cos", "warmup": 20},
        }
    }
    assert {k: s.value for k, s in merged.sources.items()} == {
        "opt.name": "override",
        "opt.momentum": "config",
        "opt.nesterov": "default",
        "opt.sched.kind": "config",
        "opt.sched.warmup": "code",
    }


def test_a_scalar_replaces_a_dict() -> None:
    merged = merge_hparams(
        HparamLayers(config={"opt": {"name": "sgd", "momentum": 0.9}}, code={"opt": "adam"})
    )
    assert merged.values == {"opt": "adam"}
    assert merged.sources == {"opt": Source.CODE}


def test_a_dict_replaces_a_scalar() -> None:
    merged = merge_hparams(
        HparamLayers(config={"opt": "adam"}, override={"opt": {"name": "sgd", "momentum": 0.9}})
    )
    assert merged.values == {"opt": {"name": "sgd", "momentum": 0.9}}
    assert merged.sources == {"opt.name": Source.OVERRIDE, "opt.momentum": Source.OVERRIDE}


def test_an_empty_dict_is_a_leaf_and_merges_nothing_into_a_dict() -> None:
    merged = merge_hparams(HparamLayers(config={"opt": {}}))
    assert merged.values == {"opt": {}}
    assert merged.sources == {"opt": Source.CONFIG}
    kept = merge_hparams(HparamLayers(config={"opt": {"a": 1}}, code={"opt": {}}))
    assert kept.values == {"opt": {"a": 1}}
    assert kept.sources == {"opt.a": Source.CONFIG}


def test_merge_does_not_alias_or_change_its_inputs() -> None:
    config = {"opt": {"name": "sgd"}, "layers": [1, 2]}
    code = {"opt": {"momentum": 0.9}}
    merged = merge_hparams(HparamLayers(config=config, code=code))
    merged.values["opt"]["name"] = "changed"
    merged.values["layers"].append(3)
    assert config == {"opt": {"name": "sgd"}, "layers": [1, 2]}
    assert code == {"opt": {"momentum": 0.9}}


def test_lists_are_values_not_merged() -> None:
    merged = merge_hparams(HparamLayers(config={"sizes": [1, 2, 3]}, code={"sizes": [4]}))
    assert merged.values == {"sizes": [4]}


@pytest.mark.parametrize(
    ("layers", "key"),
    [
        (HparamLayers(code=[("lr", 0.1)]), "code hyperparameters"),  # type: ignore[arg-type]
        (HparamLayers(config={1: "a"}), "hyperparameters"),
    ],
)
def test_bad_layers_are_config_errors(layers: HparamLayers, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        merge_hparams(layers)
    assert str(info.value).startswith(f"{key} = ")


def test_sources_are_ordered_like_the_values() -> None:
    merged = merge_hparams(
        HparamLayers(config={"b": 1, "a": {"y": 1, "x": 2}}, code={"c": 3, "a": {"z": 0}})
    )
    assert list(merged.sources) == list(flatten(merged.values))
    assert list(merged.sources) == ["b", "a.y", "a.x", "a.z", "c"]


def test_flatten_dotted_leaves() -> None:
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}, "f": {}}) == {
        "a": 1,
        "b.c": 2,
        "b.d.e": 3,
        "f": {},
    }


# --- replacement warnings ------------------------------------------------------------------


def test_override_replacing_code_is_reported_with_both_values_and_winner() -> None:
    merged = merge_hparams(HparamLayers(code={"lr": 0.3}, override={"lr": 0.2}))
    assert merged.replaced == (Replacement("lr", 0.3, 0.2, Source.OVERRIDE),)
    assert str(merged.replaced[0]) == (
        "hyperparameters.lr: code gave 0.3, override gave 0.2; using override's 0.2"
    )


def test_searcher_replacing_code_is_reported() -> None:
    merged = merge_hparams(HparamLayers(code={"opt": {"lr": 0.3}}, searcher={"opt": {"lr": 0.01}}))
    assert merged.replaced == (Replacement("opt.lr", 0.3, 0.01, Source.SEARCHER),)


def test_config_replacing_code_is_reported_only_with_precedence_config() -> None:
    layers = HparamLayers(config={"lr": 0.1}, code={"lr": 0.3})
    assert merge_hparams(layers, "code").replaced == ()
    assert merge_hparams(layers, "config").replaced == (Replacement("lr", 0.3, 0.1, Source.CONFIG),)


def test_no_report_when_the_higher_layer_gives_the_same_value() -> None:
    assert merge_hparams(HparamLayers(code={"lr": 0.3}, override={"lr": 0.3})).replaced == ()
    assert merge_hparams(HparamLayers(code={"lr": 0.3}, default={"lr": 0.1})).replaced == ()
    assert merge_hparams(HparamLayers(code={"lr": 0.3}, override={"wd": 0.1})).replaced == ()


def test_code_value_replaced_by_a_parent_scalar_or_child_dict_is_reported() -> None:
    """A code value a higher layer removes (by a scalar above it or a mapping) warns."""
    parent = merge_hparams(HparamLayers(code={"opt": {"lr": 0.3}}, override={"opt": "adam"}))
    assert parent.values == {"opt": "adam"}
    assert [r.key for r in parent.replaced] == ["opt.lr"]
    child = merge_hparams(HparamLayers(code={"opt": "adam"}, override={"opt": {"lr": 0.3}}))
    assert child.values == {"opt": {"lr": 0.3}}
    assert [r.key for r in child.replaced] == ["opt"]


# --- properties ----------------------------------------------------------------------------

keys = st.sampled_from(["a", "b", "c", "lr", "opt"])
scalars = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y"]), st.none(), st.booleans())


def trees(allow_empty: bool) -> st.SearchStrategy[dict[str, Any]]:
    min_size = 0 if allow_empty else 1
    return st.recursive(
        st.dictionaries(keys, scalars, min_size=min_size, max_size=3),
        lambda children: st.dictionaries(
            keys, st.one_of(scalars, children), min_size=min_size, max_size=3
        ),
        max_leaves=8,
    )


layer_trees = trees(allow_empty=True)
full_trees = trees(allow_empty=False)


def five(tree_strategy: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[HparamLayers]:
    return st.builds(
        HparamLayers,
        default=tree_strategy,
        config=tree_strategy,
        code=tree_strategy,
        override=tree_strategy,
        searcher=tree_strategy,
    )


precedences = st.sampled_from(list(Precedence))


def touches(layer: Mapping[str, Any], key: str) -> bool:
    """Whether ``layer`` sets ``key``, a key above it, or a key below it."""
    return any(
        leaf == key or key.startswith(leaf + ".") or leaf.startswith(key + ".")
        for leaf in flatten(layer)
    )


@given(layer_trees, layer_trees, layer_trees)
def test_fold_consistency_left_grouped(
    a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]
) -> None:
    """merge(a, b, c) == merge(merge(a, b), c): the layers fold left, one at a time.

    (Right grouping is not associative for a key-by-key merge once a scalar replaces a
    dict: merge(a, merge(b, c)) loses a's keys that b's scalar removed but c restores.)
    """
    three = merge_hparams(HparamLayers(default=a, config=b, code=c))
    ab = merge_hparams(HparamLayers(default=a, config=b))
    two = merge_hparams(HparamLayers(default=ab.values, code=c))
    assert three.values == two.values
    assert list(three.sources) == list(two.sources)
    from_code = {key for key, source in three.sources.items() if source is Source.CODE}
    assert from_code == {key for key, source in two.sources.items() if source is Source.CODE}


@given(five(full_trees), precedences)
def test_the_top_most_layer_setting_a_leaf_wins(
    layers: HparamLayers, precedence: Precedence
) -> None:
    merged = merge_hparams(layers, precedence)
    flat = flatten(merged.values)
    order = layers.ordered(precedence)
    for index, (source, layer) in enumerate(order):
        higher = [higher_layer for _, higher_layer in order[index + 1 :]]
        for key, value in flatten(layer).items():
            if not any(touches(h, key) for h in higher):
                assert flat[key] == value
                assert merged.sources[key] is source
    # the searcher's (top-most) leaves are always there, verbatim
    for key, value in flatten(layers.searcher).items():
        assert flat[key] == value
        assert merged.sources[key] is Source.SEARCHER


@given(five(layer_trees), precedences)
def test_every_leaf_comes_from_a_layer_that_set_it(
    layers: HparamLayers, precedence: Precedence
) -> None:
    merged = merge_hparams(layers, precedence)
    flat = flatten(merged.values)
    assert list(merged.sources) == list(flat)
    given_by = {source: flatten(layer) for source, layer in layers.ordered(precedence)}
    for key, source in merged.sources.items():
        assert key in given_by[source]
        assert given_by[source][key] == flat[key]


@given(five(layer_trees))
def test_precedence_only_changes_keys_both_config_and_code_set(layers: HparamLayers) -> None:
    by_code = merge_hparams(layers, Precedence.CODE)
    by_config = merge_hparams(layers, Precedence.CONFIG)
    flat_code, flat_config = flatten(by_code.values), flatten(by_config.values)
    for key in set(flat_code) | set(flat_config):
        same = flat_code.get(key, KeyError) == flat_config.get(
            key, KeyError
        ) and by_code.sources.get(key) is by_config.sources.get(key)
        if not same:
            assert touches(layers.config, key) and touches(layers.code, key), key
    if not any(touches(layers.config, key) for key in flatten(layers.code)):
        assert by_code.values == by_config.values
        assert by_code.sources == by_config.sources


@given(five(full_trees))
def test_config_and_code_leaf_flips_with_the_flag(layers: HparamLayers) -> None:
    code, config = flatten(layers.code), flatten(layers.config)
    above = [layers.override, layers.searcher]
    by_code = flatten(merge_hparams(layers, Precedence.CODE).values)
    by_config = flatten(merge_hparams(layers, Precedence.CONFIG).values)
    for key in set(code) & set(config):
        if not any(touches(h, key) for h in above):
            assert by_code[key] == code[key]
            assert by_config[key] == config[key]


@given(five(full_trees), precedences)
def test_replacements_are_exactly_code_leaves_whose_value_no_longer_stands(
    layers: HparamLayers, precedence: Precedence
) -> None:
    merged = merge_hparams(layers, precedence)
    flat = flatten(merged.values)
    reported = {r.key: r for r in merged.replaced}
    for key, value in flatten(layers.code).items():
        stands = key in flat and flat[key] == value
        if key in reported:  # replaced at key, by a scalar above it or a mapping in its place
            assert not stands
            assert reported[key].code_value == value != reported[key].value
            assert reported[key].winner is not Source.CODE
        else:
            owner, winner = _owner(merged.sources, key)
            assert stands or winner is Source.CODE or _get(merged.values, owner) == value


def test_code_value_removed_by_a_scalar_then_a_mapping_is_reported() -> None:
    """Found by the property test below: config's ``opt: None`` (above code at precedence
    config) removes code's ``opt.a``; the searcher's ``opt: {b: 0}`` does not bring it back."""
    merged = merge_hparams(
        HparamLayers(config={"opt": None}, code={"opt": {"a": 1}}, searcher={"opt": {"b": 0}}),
        Precedence.CONFIG,
    )
    assert merged.values == {"opt": {"b": 0}}
    assert [(r.key, r.code_value, r.value, r.winner) for r in merged.replaced] == [
        ("opt.a", 1, {"b": 0}, Source.SEARCHER)
    ]
