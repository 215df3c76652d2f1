"""The `accelerate launch` configs in recipes/accelerate/ are ones accelerate accepts as meant.

accelerate refuses an unknown top-level key when it loads a config file, but it copies every
key of `fsdp_config` / `deepspeed_config` onto the launcher's arguments without looking at it:
a misspelled nested key is silently ignored and the run goes on with the default.
`recipe_problems` therefore checks the nested keys and values too, against sets taken from
accelerate's own source, and the last tests show it catches what accelerate lets through.
No GPU and no DeepSpeed are needed; nothing is launched.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import (
    ComputeEnvironment,
    DeepSpeedPlugin,
    DistributedType,
    FullyShardedDataParallelPlugin,
    PrecisionType,
)
from accelerate.utils import launch as accelerate_launch
from accelerate.utils.constants import (
    DEEPSPEED_MULTINODE_LAUNCHERS,
    FSDP2_STATE_DICT_TYPE,
    FSDP_AUTO_WRAP_POLICY,
    FSDP_BACKWARD_PREFETCH,
    FSDP_SHARDING_STRATEGY,
    FSDP_STATE_DICT_TYPE,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"
EXPECTED = {"fsdp", "fsdp-2x8", "deepspeed-zero3", "deepspeed-zero2", "ddp-cpu"}
YAMLS = sorted(RECIPES.glob("*.yaml"))
GPUS_PER_MACHINE = 8

# Top level: `ClusterConfig.from_yaml_file` rejects keys that are not dataclass fields.
CLUSTER_FIELDS = {field.name for field in dataclasses.fields(ClusterConfig)}

# Values of the nested configs (accelerate's own lists in accelerate.utils.constants).
OFFLOAD_DEVICES = {"none", "cpu", "nvme"}  # the launcher's --offload_*_device help text
ZERO_STAGES = {0, 1, 2, 3}
FSDP_BOOL_KEYS = {
    "fsdp_offload_params",
    "fsdp_forward_prefetch",
    "fsdp_use_orig_params",
    "fsdp_cpu_ram_efficient_loading",
    "fsdp_sync_module_states",
    "fsdp_activation_checkpointing",
    "fsdp_activation_checkpointing_offload",
}
DEEPSPEED_BOOL_KEYS = {"zero3_init_flag", "zero3_save_16bit_model"}
GPU_TYPES = {DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MULTI_GPU}


def _launch_group_dests(title: str) -> set[str]:
    """The flags of one argument group of `accelerate launch` (argparse's group listing)."""
    for group in launch_command_parser()._action_groups:
        if group.title == title:
            return {action.dest for action in group._group_actions}
    raise AssertionError(f"`accelerate launch` has no argument group {title!r}")


def _args_read_by(function: Any) -> set[str]:
    """Attribute names `function` reads from its `args` namespace (`args.x`, getattr(args, "x"))."""
    source = inspect.getsource(function)
    return set(re.findall(r"\bargs\.(\w+)", source)) | set(
        re.findall(r"getattr\(args, \"(\w+)\"", source)
    )


# How the allowed nested keys are derived. `accelerate launch` (commands/launch.py,
# `_validate_launch_command`) copies each `fsdp_config` key onto the launch arguments as
# `fsdp_<key>` (a key already starting with "fsdp" is kept) and each `deepspeed_config` key
# as is. Only arguments that the launcher then reads reach the training processes:
# - FSDP: the `fsdp_*` arguments `accelerate.utils.launch.prepare_multi_gpu_env` reads to build
#   the FSDP_* environment variables that `FullyShardedDataParallelPlugin` reads back. That set
#   must contain every flag of the launcher's "FSDP Arguments" group (checked below), and adds
#   `fsdp_ignored_modules`, read with getattr though it has no flag.
# - DeepSpeed: the flags of the launcher's "DeepSpeed Arguments" group that
#   `prepare_deepspeed_cmd_env` reads (ACCELERATE_DEEPSPEED_* variables and the deepspeed
#   multi-node command). The group's `offload_*_nvme_path` flags are left out because this
#   launcher never forwards them: an NVMe path needs a `deepspeed_config_file`.
@functools.cache
def fsdp_keys() -> frozenset[str]:
    read = _args_read_by(accelerate_launch.prepare_multi_gpu_env)
    return frozenset(name for name in read if name.startswith("fsdp_"))


@functools.cache
def deepspeed_keys() -> frozenset[str]:
    group = _launch_group_dests("DeepSpeed Arguments")
    return frozenset(group & _args_read_by(accelerate_launch.prepare_deepspeed_cmd_env))


def _fsdp_key(key: str) -> str:
    """The launch argument an `fsdp_config` key becomes (as `_validate_launch_command` does)."""
    return key if key.startswith("fsdp") else "fsdp_" + key


def _enum_value(enum: Any, value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        return None


def _fsdp_problems(fsdp: dict[str, Any]) -> list[str]:
    fsdp = {_fsdp_key(key): value for key, value in fsdp.items()}
    problems = [f"fsdp_config: unknown key {key!r}" for key in sorted(set(fsdp) - fsdp_keys())]
    version = fsdp.get("fsdp_version", 1)
    if version not in (1, 2):
        problems.append(f"fsdp_version {version!r} is not 1 or 2")
    for key in sorted(FSDP_BOOL_KEYS & set(fsdp)):
        if not isinstance(fsdp[key], bool):
            problems.append(f"{key} {fsdp[key]!r} is not true/false")
    if "fsdp_reshard_after_forward" in fsdp:
        reshard = fsdp["fsdp_reshard_after_forward"]
        if version == 2 and not isinstance(reshard, bool):
            problems.append(f"fsdp_reshard_after_forward {reshard!r}: FSDP2 takes true/false")
        if version == 1 and reshard not in FSDP_SHARDING_STRATEGY:
            problems.append(
                f"fsdp_reshard_after_forward {reshard!r} not in {FSDP_SHARDING_STRATEGY}"
            )
    choices = {
        "fsdp_sharding_strategy": FSDP_SHARDING_STRATEGY,
        "fsdp_state_dict_type": FSDP2_STATE_DICT_TYPE if version == 2 else FSDP_STATE_DICT_TYPE,
        "fsdp_auto_wrap_policy": FSDP_AUTO_WRAP_POLICY,
        "fsdp_backward_prefetch": FSDP_BACKWARD_PREFETCH,
    }
    for key, allowed in choices.items():
        if key in fsdp and fsdp[key] not in allowed:
            problems.append(f"{key} {fsdp[key]!r} not in {allowed}")
    if "fsdp_transformer_layer_cls_to_wrap" in fsdp:
        names = fsdp["fsdp_transformer_layer_cls_to_wrap"]
        if fsdp.get("fsdp_auto_wrap_policy") != "TRANSFORMER_BASED_WRAP":
            problems.append("fsdp_transformer_layer_cls_to_wrap needs TRANSFORMER_BASED_WRAP")
        if not isinstance(names, str) or not re.fullmatch(r"\w+(,\w+)*", names):
            problems.append(f"fsdp_transformer_layer_cls_to_wrap {names!r}: want Cls1,Cls2")
    if not isinstance(fsdp.get("fsdp_min_num_params", 0), int):
        problems.append("fsdp_min_num_params is not an integer")
    if version == 2 and fsdp.get("fsdp_forward_prefetch"):
        problems.append("fsdp_forward_prefetch is not implemented in FSDP2")
    if fsdp.get("fsdp_activation_checkpointing_offload") and (
        version != 2 or not fsdp.get("fsdp_activation_checkpointing")
    ):
        problems.append("fsdp_activation_checkpointing_offload needs FSDP2 and checkpointing")
    if (
        version == 1
        and fsdp.get("fsdp_cpu_ram_efficient_loading")
        and not fsdp.get("fsdp_sync_module_states")
    ):
        problems.append("fsdp_cpu_ram_efficient_loading needs fsdp_sync_module_states (FSDP1)")
    return problems


def _deepspeed_problems(deepspeed: dict[str, Any]) -> list[str]:
    problems = [
        f"deepspeed_config: unknown key {key!r}"
        for key in sorted(set(deepspeed) - deepspeed_keys())
    ]
    stage = deepspeed.get("zero_stage")
    if "deepspeed_config_file" not in deepspeed and stage not in ZERO_STAGES:
        problems.append(f"zero_stage {stage!r} not in {sorted(ZERO_STAGES)}")
    for key in ("offload_optimizer_device", "offload_param_device"):
        if key in deepspeed and deepspeed[key] not in OFFLOAD_DEVICES:
            problems.append(f"{key} {deepspeed[key]!r} not in {sorted(OFFLOAD_DEVICES)}")
    if deepspeed.get("offload_param_device", "none") != "none" and stage != 3:
        problems.append("offload_param_device needs zero_stage 3")
    for key in sorted(DEEPSPEED_BOOL_KEYS & set(deepspeed)):
        if not isinstance(deepspeed[key], bool):
            problems.append(f"{key} {deepspeed[key]!r} is not true/false")
    launcher = deepspeed.get("deepspeed_multinode_launcher", DEEPSPEED_MULTINODE_LAUNCHERS[0])
    if launcher not in DEEPSPEED_MULTINODE_LAUNCHERS:
        problems.append(f"deepspeed_multinode_launcher {launcher!r} unknown")
    steps = deepspeed.get("gradient_accumulation_steps", 1)
    if not isinstance(steps, int) or steps < 1:
        problems.append(f"gradient_accumulation_steps {steps!r} is not a positive integer")
    if not isinstance(deepspeed.get("gradient_clipping", 1.0), int | float):
        problems.append("gradient_clipping is not a number")
    return problems


def recipe_problems(path: Path) -> list[str]:
    """Everything wrong with the accelerate config at `path`; empty when it is fine."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        return [f"not YAML: {error}"]
    if not isinstance(config, dict):
        return ["not a YAML mapping"]
    problems = [f"unknown top-level key {key!r}" for key in sorted(set(config) - CLUSTER_FIELDS)]
    try:
        load_config_from_file(str(path))
    except Exception as error:  # accelerate raises ValueError / TypeError on a bad config
        problems.append(f"accelerate cannot load it: {error}")

    environment = config.get("compute_environment", ComputeEnvironment.LOCAL_MACHINE.value)
    if environment != ComputeEnvironment.LOCAL_MACHINE.value:
        problems.append(f"compute_environment {environment!r} is not LOCAL_MACHINE")
    kind = _enum_value(DistributedType, config.get("distributed_type"))
    if kind is None:
        problems.append(f"distributed_type {config.get('distributed_type')!r} unknown")
    precision = config.get("mixed_precision")
    if not isinstance(precision, str) or _enum_value(PrecisionType, precision) is None:
        problems.append(f"mixed_precision {precision!r} not in {PrecisionType.list()} (quote 'no')")

    processes, machines = config.get("num_processes"), config.get("num_machines", 1)
    rank = config.get("machine_rank", 0)
    if not all(isinstance(n, int) and n >= 1 for n in (processes, machines)):
        problems.append(f"num_processes {processes!r} / num_machines {machines!r} not >= 1")
    elif processes % machines:
        problems.append(f"num_processes {processes} is not a multiple of num_machines {machines}")
    elif not isinstance(rank, int) or not 0 <= rank < machines:
        problems.append(f"machine_rank {rank!r} not in 0..{machines - 1}")
    if isinstance(machines, int) and machines > 1 and not config.get("main_process_ip"):
        problems.append("several machines need main_process_ip")

    use_cpu = config.get("use_cpu", False)
    if kind == DistributedType.MULTI_CPU and use_cpu is not True:
        problems.append("MULTI_CPU needs use_cpu: true")
    if kind in GPU_TYPES and use_cpu is not False:
        problems.append(f"{kind.value} runs on GPUs: use_cpu must be false")

    fsdp, deepspeed = config.get("fsdp_config") or {}, config.get("deepspeed_config") or {}
    if fsdp and kind != DistributedType.FSDP:
        problems.append("fsdp_config is ignored unless distributed_type is FSDP")
    if deepspeed and kind != DistributedType.DEEPSPEED:
        problems.append("deepspeed_config is ignored unless distributed_type is DEEPSPEED")
    if kind == DistributedType.FSDP:
        problems += _fsdp_problems(fsdp)
    if kind == DistributedType.DEEPSPEED:
        problems += _deepspeed_problems(deepspeed)
    return problems


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _write_variant(tmp_path: Path, name: str, change: Any) -> Path:
    """A copy of recipe `name` with `change(config)` applied, written under tmp_path."""
    config = _load(RECIPES / f"{name}.yaml")
    change(config)
    path = tmp_path / f"{name}-variant.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_the_derived_key_sets_are_sound() -> None:
    # The launcher must read every FSDP flag it offers, else the derivation above is stale.
    assert _launch_group_dests("FSDP Arguments") <= fsdp_keys()
    assert {"fsdp_version", "fsdp_state_dict_type", "fsdp_auto_wrap_policy"} <= fsdp_keys()
    assert {"zero_stage", "offload_optimizer_device", "zero3_init_flag"} <= deepspeed_keys()
    assert "offload_param_nvme_path" not in deepspeed_keys()


def test_every_recipe_is_there() -> None:
    assert {path.stem for path in YAMLS} == EXPECTED


@pytest.mark.parametrize("path", YAMLS, ids=lambda path: path.stem)
def test_recipe_is_valid(path: Path) -> None:
    assert recipe_problems(path) == []


@pytest.mark.parametrize("path", YAMLS, ids=lambda path: path.stem)
def test_recipe_starts_with_its_purpose_and_launch_command(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    header = text[: text.index("\ncompute_environment:")]
    assert text.startswith("# ")
    assert all(line.startswith("#") for line in header.splitlines())
    assert f"--config_file recipes/accelerate/{path.name}" in header
    assert "frugal.cli train" in header


@pytest.mark.parametrize("path", YAMLS, ids=lambda path: path.stem)
def test_accelerate_loads_recipe_as_written(path: Path) -> None:
    raw = _load(path)
    loaded = load_config_from_file(str(path))
    assert isinstance(loaded, ClusterConfig)
    assert loaded.distributed_type == DistributedType(raw["distributed_type"])
    assert (loaded.num_processes, loaded.num_machines) == (
        raw["num_processes"],
        raw["num_machines"],
    )
    assert loaded.fsdp_config == raw.get("fsdp_config", {})
    assert loaded.deepspeed_config == raw.get("deepspeed_config", {})


def test_gpu_recipes_have_their_shape() -> None:
    configs = {name: _load(RECIPES / f"{name}.yaml") for name in EXPECTED}
    shapes = {
        name: (config["num_machines"], config["num_processes"], config["distributed_type"])
        for name, config in configs.items()
    }
    assert shapes == {
        "fsdp": (1, 8, "FSDP"),
        "fsdp-2x8": (2, 16, "FSDP"),  # s1: Qwen2.5-32B on 2 nodes x 8 H100
        "deepspeed-zero3": (1, 8, "DEEPSPEED"),
        "deepspeed-zero2": (1, 8, "DEEPSPEED"),
        "ddp-cpu": (1, 2, "MULTI_CPU"),
    }
    for name in EXPECTED - {"ddp-cpu"}:
        config = configs[name]
        assert config["num_processes"] == config["num_machines"] * GPUS_PER_MACHINE
        assert config["mixed_precision"] == "bf16"
    assert configs["deepspeed-zero3"]["deepspeed_config"]["zero_stage"] == 3
    assert configs["deepspeed-zero2"]["deepspeed_config"]["zero_stage"] == 2
    assert configs["ddp-cpu"]["use_cpu"] is True


def _launch_args(path: Path, *flags: str) -> tuple[Any, ClusterConfig]:
    """The launch arguments `accelerate launch <flags> --config_file path -m frugal.cli train`
    ends with, through accelerate's own parser and config merge (nothing is started)."""
    from accelerate.commands.launch import _validate_launch_command

    argv = [*flags, "--config_file", str(path), "-m", "frugal.cli", "train"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    return args, defaults


def _set_new_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Set, for this test only, the variables the launcher would add for the processes."""
    for key, value in env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)


@pytest.mark.parametrize("name", ["fsdp", "fsdp-2x8"])
def test_fsdp_recipe_reaches_the_fsdp_plugin(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A busy port 29500 on this machine must not matter: nothing listens here.
    monkeypatch.setattr(accelerate_launch, "is_port_in_use", lambda port: False)
    fsdp = _load(RECIPES / f"{name}.yaml")["fsdp_config"]
    args, _ = _launch_args(RECIPES / f"{name}.yaml")
    assert args.use_fsdp and args.mixed_precision == "bf16"
    _set_new_env(monkeypatch, accelerate_launch.prepare_multi_gpu_env(args))
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables, as each rank does
    assert plugin.fsdp_version == fsdp["fsdp_version"] == 2
    assert plugin.reshard_after_forward is fsdp["fsdp_reshard_after_forward"]
    assert plugin.state_dict_type.name == fsdp["fsdp_state_dict_type"]
    assert plugin.activation_checkpointing is fsdp["fsdp_activation_checkpointing"]
    assert plugin.cpu_ram_efficient_loading is fsdp["fsdp_cpu_ram_efficient_loading"]
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"


@pytest.mark.parametrize("name", ["deepspeed-zero3", "deepspeed-zero2"])
def test_deepspeed_recipe_reaches_the_deepspeed_plugin(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accelerate_launch, "is_port_in_use", lambda port: False)
    deepspeed = _load(RECIPES / f"{name}.yaml")["deepspeed_config"]
    args, defaults = _launch_args(RECIPES / f"{name}.yaml")
    assert args.use_deepspeed and args.mixed_precision == "bf16"
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    cmd, env = accelerate_launch.prepare_deepspeed_cmd_env(args)
    assert cmd is None  # one machine: torchrun, not the `deepspeed` multi-node command
    _set_new_env(monkeypatch, env)
    plugin = DeepSpeedPlugin()  # builds its config from the ACCELERATE_DEEPSPEED_* variables
    zero = plugin.deepspeed_config["zero_optimization"]
    assert plugin.zero_stage == zero["stage"] == deepspeed["zero_stage"]
    assert zero["offload_optimizer"]["device"] == deepspeed["offload_optimizer_device"]
    assert zero["offload_param"]["device"] == deepspeed["offload_param_device"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is deepspeed.get(
        "zero3_save_16bit_model", False
    )
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"  # the Trainer's


def test_cpu_recipe_starts_two_cpu_processes_as_documented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accelerate_launch, "is_port_in_use", lambda port: False)
    path = RECIPES / "ddp-cpu.yaml"
    # Plain launch: accelerate's simple launcher marks the process as a CPU one.
    args, _ = _launch_args(path)
    _, env = accelerate_launch.prepare_simple_launcher_cmd_env(args)
    assert env["ACCELERATE_USE_CPU"] == "True" and env["ACCELERATE_MIXED_PRECISION"] == "no"
    # The command in the recipe's header: torchrun starts num_processes local processes.
    args, _ = _launch_args(path, "--multi_gpu")
    accelerate_launch.prepare_multi_gpu_env(args)
    assert args.nproc_per_node == "2" and args.use_cpu is True


# The validation can fail: misspellings and bad values in copies written to tmp_path.


def test_misspelled_top_level_key_fails(tmp_path: Path) -> None:
    path = _write_variant(
        tmp_path, "fsdp", lambda config: config.update(num_proceses=config.pop("num_processes"))
    )
    with pytest.raises(ValueError, match="unknown keys"):
        load_config_from_file(str(path))  # accelerate itself refuses this one
    problems = recipe_problems(path)
    assert "unknown top-level key 'num_proceses'" in problems


def test_misspelled_fsdp_key_fails_though_accelerate_accepts_it(tmp_path: Path) -> None:
    def misspell(config: dict[str, Any]) -> None:
        fsdp = config["fsdp_config"]
        fsdp["fsdp_state_dict_typ"] = fsdp.pop("fsdp_state_dict_type")

    path = _write_variant(tmp_path, "fsdp", misspell)
    assert load_config_from_file(str(path)).fsdp_config["fsdp_state_dict_typ"]  # silently kept
    assert recipe_problems(path) == ["fsdp_config: unknown key 'fsdp_state_dict_typ'"]


def test_misspelled_deepspeed_key_fails_though_accelerate_accepts_it(tmp_path: Path) -> None:
    def misspell(config: dict[str, Any]) -> None:
        deepspeed = config["deepspeed_config"]
        deepspeed["zero3_save_16bit_modle"] = deepspeed.pop("zero3_save_16bit_model")

    path = _write_variant(tmp_path, "deepspeed-zero3", misspell)
    load_config_from_file(str(path))
    assert recipe_problems(path) == ["deepspeed_config: unknown key 'zero3_save_16bit_modle'"]


@pytest.mark.parametrize(
    ("name", "section", "key", "value", "problem"),
    [
        ("fsdp", "fsdp_config", "fsdp_state_dict_type", "SHARDED", "fsdp_state_dict_type"),
        ("fsdp", "fsdp_config", "fsdp_state_dict_type", "LOCAL_STATE_DICT", "fsdp_state_dict"),
        ("fsdp", "fsdp_config", "fsdp_reshard_after_forward", "FULL_SHARD", "FSDP2 takes"),
        ("fsdp", "fsdp_config", "fsdp_auto_wrap_policy", "LAYER_WRAP", "fsdp_auto_wrap"),
        ("fsdp", "fsdp_config", "fsdp_offload_params", "yes", "fsdp_offload_params"),
        ("fsdp", None, "distributed_type", "FSDP2", "distributed_type"),
        ("fsdp", None, "mixed_precision", "bfloat16", "mixed_precision"),
        ("fsdp-2x8", None, "num_processes", 15, "not a multiple"),
        ("fsdp-2x8", None, "machine_rank", 2, "machine_rank"),
        ("deepspeed-zero3", "deepspeed_config", "zero_stage", 4, "zero_stage"),
        ("deepspeed-zero3", "deepspeed_config", "offload_param_device", "disk", "offload_param"),
        ("deepspeed-zero2", "deepspeed_config", "offload_param_device", "cpu", "zero_stage 3"),
        ("ddp-cpu", None, "mixed_precision", False, "quote 'no'"),  # a bare `no` in YAML
        ("ddp-cpu", None, "use_cpu", False, "use_cpu"),
    ],
)
def test_bad_values_fail(
    tmp_path: Path, name: str, section: str | None, key: str, value: Any, problem: str
) -> None:
    def change(config: dict[str, Any]) -> None:
        (config[section] if section else config)[key] = value

    problems = recipe_problems(_write_variant(tmp_path, name, change))
    assert any(problem in line for line in problems), problems
