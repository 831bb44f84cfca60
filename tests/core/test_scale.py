"""Batch-size scaling (design section 5): rules, ``scaled()``, the ``df.scale`` resolver."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import GrammarParseError, InterpolationResolutionError

import detflow
from detflow import ConfigError, ScaleRule, apply_rule, load_config, scale_factor, scaled
from detflow._hydra.resolvers import register_resolvers, resolve_scale
from tests.support import REPO


def config(
    expression: Any, gbs: Any = 32, base: Any = 32, aggregation: Any = 1, key: str = "x"
) -> DictConfig:
    cfg = OmegaConf.create(
        {
            "hyperparameters": {"global_batch_size": gbs, "base_batch_size": base, key: expression},
            "optimizations": {"aggregation_frequency": aggregation},
        }
    )
    assert isinstance(cfg, DictConfig)
    return cfg


# --- the rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule", "k", "expected"),
    [
        (0.1, "linear", 2.0, 0.2),
        (0.1, "linear", 0.5, 0.05),
        (0.1, "sqrt", 4.0, 0.2),
        (0.1, "sqrt", 0.25, 0.05),
        (0.1, "inverse", 2.0, 0.05),
        (0.9, "adam_beta", 2.0, 0.8),
        (0.999, "adam_beta", 4.0, 0.996),
        (0.9, "adam_beta", 0.5, 0.95),
        (1e-8, "adam_eps", 4.0, 5e-9),
        (0.1, "none", 8.0, 0.1),
        (0.1, ScaleRule.LINEAR, 3.0, 0.3),
    ],
)
def test_each_rule_scales_as_documented(value: float, rule: Any, k: float, expected: float) -> None:
    result = apply_rule(value, rule, k)
    assert isinstance(result, float)
    assert result == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("value", "rule", "k", "expected"),
    [
        (1000, "inverse", 4.0, 250),
        (4000, "inverse", 3.0, 1333),
        (10, "linear", 1.5, 15),
        (100, "sqrt", 2.0, 141),
        (7, "none", 16.0, 7),
        (100, "adam_eps", 4.0, 50),
        (3, "linear", 0.1, 0),
    ],
)
def test_integers_stay_integers_rounded(value: int, rule: str, k: float, expected: int) -> None:
    result = apply_rule(value, rule, k)
    assert type(result) is int
    assert result == expected


def test_scale_factor_is_effective_batch_over_base() -> None:
    assert scale_factor(64, 1, 32) == 2.0
    assert scale_factor(32, 2, 32) == 2.0
    assert scale_factor(16, 1, 32) == 0.5
    assert scale_factor(48, 4, 64) == 3.0


@pytest.mark.parametrize(
    ("args", "key", "bad"),
    [
        ((0, 1, 32), "hyperparameters.global_batch_size", 0),
        ((-32, 1, 32), "hyperparameters.global_batch_size", -32),
        ((32.0, 1, 32), "hyperparameters.global_batch_size", 32.0),
        ((None, 1, 32), "hyperparameters.global_batch_size", None),
        ((32, 0, 32), "optimizations.aggregation_frequency", 0),
        ((32, True, 32), "optimizations.aggregation_frequency", True),
        ((32, 1, 0), "hyperparameters.base_batch_size", 0),
        ((32, 1, None), "hyperparameters.base_batch_size", None),
    ],
)
def test_scale_factor_names_the_bad_key(args: tuple[Any, Any, Any], key: str, bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        scale_factor(*args)
    assert str(info.value).startswith(f"{key} = {bad!r} is not valid")


@pytest.mark.parametrize(("beta", "k"), [(0.5, 2.0), (0.9, 12.0), (0.99, 200.0), (0.0, 1.0)])
def test_adam_beta_rejected_when_k_times_one_minus_beta_reaches_one(beta: float, k: float) -> None:
    with pytest.raises(ConfigError) as info:
        apply_rule(beta, "adam_beta", k, key="hyperparameters.beta1")
    message = str(info.value)
    assert message.startswith(f"hyperparameters.beta1 = {beta!r} is not valid")
    assert "adam_beta" in message


@pytest.mark.parametrize("beta", [1.0, 1.5, -0.1])
def test_adam_beta_outside_unit_interval_rejected(beta: float) -> None:
    with pytest.raises(ConfigError, match=r"^hyperparameters\.beta2 = "):
        apply_rule(beta, "adam_beta", 1.0, key="hyperparameters.beta2")


@pytest.mark.parametrize("rule", ["cubic", "Linear", "", None, 3])
def test_unknown_rule_names_the_key(rule: Any) -> None:
    with pytest.raises(ConfigError) as info:
        apply_rule(0.1, rule, 2.0, key="hyperparameters.lr")
    message = str(info.value)
    assert message.startswith(f"hyperparameters.lr = {rule!r} is not valid")
    assert "linear, sqrt, inverse, adam_beta, adam_eps, none" in message


@pytest.mark.parametrize("value", ["0.1", None, True, math.nan, math.inf, [0.1]])
def test_non_numbers_are_rejected(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^hyperparameters\.lr = "):
        apply_rule(value, "linear", 2.0, key="hyperparameters.lr")


# --- scaled(): the interpolation for dataclass fields --------------------------------------


def test_scaled_writes_the_interpolation() -> None:
    assert scaled(0.1, "linear") == "${df.scale:0.1,linear}"
    assert scaled(0.1) == "${df.scale:0.1,linear}"
    assert scaled(4000, ScaleRule.INVERSE) == "${df.scale:4000,inverse}"
    assert scaled(1e-8, "adam_eps") == "${df.scale:1e-08,adam_eps}"
    assert scaled(0.9, "adam_beta") == "${df.scale:0.9,adam_beta}"
    assert (
        scaled("${hyperparameters.base_lr}", "sqrt")
        == "${df.scale:${hyperparameters.base_lr},sqrt}"
    )


def test_scaled_rejects_bad_rule_and_value() -> None:
    with pytest.raises(ConfigError, match=r"^rule = 'cubic' is not valid"):
        scaled(0.1, "cubic")
    with pytest.raises(ConfigError, match=r"^value = True is not valid"):
        scaled(True, "linear")
    with pytest.raises(ConfigError, match=r"^value = None is not valid"):
        scaled(None, "linear")  # type: ignore[arg-type]


# --- the resolver, through OmegaConf -------------------------------------------------------


def test_resolver_is_registered_on_import() -> None:
    assert OmegaConf.has_resolver("df.scale")
    register_resolvers()  # safe to call again
    assert OmegaConf.has_resolver("df.scale")


@pytest.mark.parametrize(
    ("gbs", "base", "aggregation", "expected"),
    [(32, 32, 1, 0.1), (64, 32, 1, 0.2), (32, 32, 2, 0.2), (16, 32, 1, 0.05), (64, 32, 2, 0.4)],
)
def test_resolver_reads_gbs_aggregation_and_base_from_its_config(
    gbs: int, base: int, aggregation: int, expected: float
) -> None:
    cfg = config(scaled(0.1, "linear"), gbs, base, aggregation)
    assert cfg.hyperparameters.x == pytest.approx(expected)


def test_resolver_defaults_aggregation_frequency_to_one() -> None:
    cfg = OmegaConf.create(
        {
            "hyperparameters": {
                "global_batch_size": 64,
                "base_batch_size": 32,
                "lr": "${df.scale:0.1,linear}",
            }
        }
    )
    assert cfg.hyperparameters.lr == pytest.approx(0.2)


def test_resolver_rederives_after_the_batch_size_changes() -> None:
    cfg = config("${df.scale:0.1,linear}")
    assert cfg.hyperparameters.x == pytest.approx(0.1)
    cfg.hyperparameters.global_batch_size = 128
    assert cfg.hyperparameters.x == pytest.approx(0.4)


def test_resolver_scales_a_nested_interpolation_and_keeps_ints() -> None:
    cfg = config("${df.scale:${hyperparameters.base_lr},sqrt}", gbs=128)
    cfg.hyperparameters.base_lr = 0.1
    cfg.hyperparameters.warmup = "${df.scale:4000,inverse}"
    assert cfg.hyperparameters.x == pytest.approx(0.2)
    assert cfg.hyperparameters.warmup == 1000
    assert type(cfg.hyperparameters.warmup) is int


@pytest.mark.parametrize(
    ("expression", "gbs", "needle"),
    [
        ("${df.scale:0.1,cubic}", 32, "hyperparameters.lr = 'cubic' is not valid"),
        ("${df.scale:0.9,adam_beta}", 384, "hyperparameters.lr = 0.9 is not valid"),
        ("${df.scale:0.1,linear}", 0, "hyperparameters.global_batch_size = 0 is not valid"),
    ],
)
def test_resolver_errors_name_the_key(expression: str, gbs: int, needle: str) -> None:
    cfg = config(expression, gbs=gbs, key="lr")
    with pytest.raises(InterpolationResolutionError) as info:
        _ = cfg.hyperparameters.lr
    assert needle in str(info.value)


def test_resolver_function_and_resolved_config_pickle() -> None:
    assert pickle.loads(pickle.dumps(resolve_scale)) is resolve_scale
    assert pickle.loads(pickle.dumps(ScaleRule.SQRT)) is ScaleRule.SQRT
    loaded = load_config(config(scaled(0.1, "linear"), gbs=64, key="lr"))
    again = pickle.loads(pickle.dumps(loaded))
    assert again.resolved == loaded.resolved
    assert again.experiment.hyperparameters["lr"] == pytest.approx(0.2)
    resolved = OmegaConf.create(
        OmegaConf.to_container(config("${df.scale:0.1,linear}", gbs=64), resolve=True)
    )
    assert pickle.loads(pickle.dumps(resolved)) == resolved


_UNPICKLE = (
    "import pickle, sys\n{imports}cfg = pickle.load(sys.stdin.buffer)\n"
    "print(cfg.hyperparameters.lr)\n"
)


def _unpickle_in_fresh_process(payload: bytes, imports: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _UNPICKLE.format(imports=imports)],
        input=payload.decode("latin-1"),
        capture_output=True,
        text=True,
        encoding="latin-1",
        cwd=REPO,
        timeout=60,
    )


def test_pickled_interpolation_resolves_in_a_fresh_process_after_import_detflow() -> None:
    """What a Slurm worker does: unpickle the config, ``import detflow``, resolve."""
    payload = pickle.dumps(config("${df.scale:0.1,linear}", gbs=32, aggregation=2, key="lr"))
    done = _unpickle_in_fresh_process(payload, "import detflow\n")
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) == pytest.approx(0.2)
    # the import is what registers the resolver: without it the worker cannot resolve
    bare = _unpickle_in_fresh_process(payload, "")
    assert bare.returncode != 0
    assert "df.scale" in bare.stderr


# --- fuzzing: nothing but ConfigError ------------------------------------------------------

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
)
rules = st.one_of(
    st.sampled_from([r.value for r in ScaleRule]), st.sampled_from(list(ScaleRule)), anything
)
positive_ints = st.integers(1, 10**6)
batch_args = st.one_of(positive_ints, anything)


@given(anything, rules, batch_args, batch_args, batch_args)
def test_fuzz_rules_raise_only_config_error(
    value: Any, rule: Any, gbs: Any, aggregation: Any, base: Any
) -> None:
    try:
        k = scale_factor(gbs, aggregation, base)
        result = apply_rule(value, rule, k, key="hyperparameters.x")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(result, (int, float)) and not isinstance(result, bool)
    assert isinstance(result, int) == isinstance(value, int)


@given(anything, rules)
def test_fuzz_scaled_raises_only_config_error(value: Any, rule: Any) -> None:
    try:
        text = scaled(value, rule)
    except ConfigError:
        return
    assert text.startswith("${df.scale:") and text.endswith("}")


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(st.integers(-(10**9), 10**9), st.floats(-1e6, 1e6, allow_nan=False)),
    st.sampled_from(list(ScaleRule)),
    positive_ints,
    st.integers(1, 16),
    positive_ints,
)
def test_fuzz_scaled_resolves_to_apply_rule(
    value: float, rule: ScaleRule, gbs: int, aggregation: int, base: int
) -> None:
    """What ``scaled()`` writes, OmegaConf resolves to exactly what ``apply_rule`` says."""
    cfg = config(scaled(value, rule), gbs, base, aggregation)
    try:
        expected = apply_rule(value, rule, scale_factor(gbs, aggregation, base))
    except ConfigError:
        with pytest.raises(InterpolationResolutionError):
            _ = cfg.hyperparameters.x
        return
    got = cfg.hyperparameters.x
    assert type(got) is type(expected)
    assert got == expected


@pytest.mark.filterwarnings("ignore::UserWarning")  # OmegaConf's own, on odd argument lists
@settings(max_examples=60, deadline=None)
@given(st.text(max_size=20), st.one_of(st.integers(-4, 64), anything))
def test_fuzz_interpolation_through_load_config_raises_only_config_error(
    arguments: str, gbs: Any
) -> None:
    """Any arguments, any batch size: ``load_config`` answers with a ConfigError or a value.

    (A string OmegaConf cannot even parse is rejected when the DictConfig is made, before
    detflow sees it; ``test_config.py`` covers such strings in plain dicts.)
    """
    try:
        cfg = OmegaConf.create(
            {
                "hyperparameters": {
                    "global_batch_size": gbs,
                    "base_batch_size": 32,
                    "lr": "${df.scale:" + arguments + "}",
                }
            }
        )
    except GrammarParseError:
        assume(False)
    try:
        load_config(cfg, overrides=[], searcher_keys=[])
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_overflowing_values_are_config_errors() -> None:
    """Values that overflow float math are bad config values: ConfigError, never OverflowError."""
    for call in (
        lambda: apply_rule(10**400, "linear", 2.0),
        lambda: apply_rule(10**300, "linear", 1e10),
        lambda: scale_factor(10**400, 1, 1),
    ):
        with pytest.raises(ConfigError):
            call()


def test_public_names() -> None:
    for name in ("ScaleRule", "apply_rule", "scale_factor", "scaled"):
        assert name in detflow.__all__
