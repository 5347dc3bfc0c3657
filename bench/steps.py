"""The steps of one `bench.py` run, in the order it takes them: per model the baseline clips, then its
overlapped VAE decodes, profiles, options and float32 reference; last the VAE decode alone.

`Plan` is what the command line asked for, `Run` what the steps share (the setup, the results so far, the
latents that options and the float32 reference are measured against). Every step catches its own
failure into `results["errors"]` and rewrites `--json`, so a run keeps what it measured."""

from __future__ import annotations

import copy
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import causal
from bench.configs import CONFIGS, BenchConfig
from bench.environment import GiB, free_memory
from bench.models import Setup, make_context, prepare_model
from bench.options import OPTIONS
from bench.profiling import profile_forwards
from bench.timing import fp32_reference, time_config


@dataclass(frozen=True)
class Plan:
    """What to run (from the command line; see `bench.parse_args` for each field's flag)."""

    configs: list[BenchConfig]
    model_names: list[str]
    """The models of `configs`, in order of first use."""
    repeats: int
    warmups: int
    options: list[str]
    options_14b: list[str]
    option_configs: list[BenchConfig]
    option_repeats: int
    option_repeats_14b: int
    profile: bool
    profile_models: list[str]
    profile_option: str
    profile_slots: list[str]
    profile_forwards: int
    fp32_reference: str
    budget_s: float | None
    json_path: str | None


@dataclass
class Run:
    """One run: its plan and setup, what it has measured so far and the latents measured against."""

    plan: Plan
    setup: Setup
    results: dict[str, Any]
    started: float
    """perf_counter() at the start of the run: the log's clock and --budget-s count from here."""
    contexts: dict[str, torch.Tensor] = field(default_factory=dict)
    exact_latents: dict[str, torch.Tensor] = field(default_factory=dict)
    option_latents: dict[str, torch.Tensor] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f} s] {msg}", flush=True)

    def time_ok(self, step: str, need_s: float = 0.0) -> bool:
        """Whether `step` (taking about `need_s`) still fits in --budget-s; notes a skipped step."""
        budget_s = self.plan.budget_s
        if budget_s is None or time.perf_counter() - self.started + need_s < budget_s:
            return True
        self.results["notes"].append(f"skipped {step}: past the --budget-s of {budget_s:.0f} s")
        self.log(f"skip {step}: time budget")
        return False

    def save(self) -> None:
        if self.plan.json_path:
            Path(self.plan.json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.plan.json_path).write_text(json.dumps(self.results, indent=1, default=str))


def run_models(run: Run) -> None:
    """Each model's baselines and extras. With several models the first one's extras wait (parked on the
    CPU) until every model's baselines are measured."""
    model_names = run.plan.model_names
    parked: dict[str, Any] = {}  # 1.3B parked on the CPU while the 14B runs, for its profile/options later
    for name in model_names:
        try:
            model, info = prepare_model(name, run.setup, run.log)
        except Exception as e:
            traceback.print_exc()
            run.results["errors"].append(f"{name}: preparing the model failed: {type(e).__name__}: {e}")
            run.save()
            continue
        run.results["models"].append(info)
        run.contexts[name] = make_context(model.config, run.setup)
        run_baselines(run, name, model)
        if name == model_names[0] and len(model_names) > 1:
            model.to("cpu")  # park: its profile/options run after the other models' baselines
            parked[name] = model
        else:
            run_extras(run, name, model, reserve_s=120.0 if parked else 0.0)
            del model
        free_memory()
    for name, model in parked.items():
        model.to(run.setup.device)
        free_memory()
        run_extras(run, name, model, reserve_s=0.0)
        del model
        free_memory()
    parked.clear()


def run_baselines(run: Run, name: str, model: causal.CausalWanModel) -> None:
    """The exact path on each configuration of model `name`: its row and final latents."""
    setup = run.setup
    for cfg in run.plan.configs:
        if cfg.model != name:
            continue
        run.log(f"{cfg.key}: {cfg.label}")
        try:
            row, latents = time_config(model, run.contexts[name], cfg, setup, run.plan.repeats, run.log,
                                       warmups=run.plan.warmups)
        except Exception as e:
            traceback.print_exc()
            run.results["errors"].append(f"{cfg.key}: {type(e).__name__}: {e}")
            free_memory()
            continue
        if setup.device.type == "cuda" and hasattr(causal, "working_memory_bytes"):
            est = causal.working_memory_bytes(model, batch=1, num_frames=setup.num_frames, height=setup.height,
                                              width=setup.width)
            weights = sum(p.numel() * p.element_size() for p in model.parameters())
            row["estimated_vram_gib"] = (est + weights) / GiB
        run.results["configs"].append(row)
        run.exact_latents[cfg.key] = latents
        run.save()


def run_extras(run: Run, name: str, model: causal.CausalWanModel, reserve_s: float) -> None:
    """Everything after the baselines on model `name`: profiles, options, fp32 reference."""
    if run.plan.profile and name in run.plan.profile_models:
        run_profiles(run, name, model)
    if run.plan.options or run.plan.options_14b:
        run_options(run, name, model, reserve_s=reserve_s)
    run_fp32_reference(run, name, model)


def run_options(run: Run, name: str, model: causal.CausalWanModel, reserve_s: float = 0.0) -> None:
    big = name == "14B"
    names = run.plan.options_14b if big else run.plan.options
    cfgs = [cfg for cfg in run.plan.option_configs if cfg.model == name]
    # fp8 converts the model in place: every other option on every configuration runs first
    runs = [(cfg, o) for o in names if not OPTIONS[o].fp8 for cfg in cfgs]
    runs += [(cfg, o) for o in names if OPTIONS[o].fp8 for cfg in cfgs]
    for cfg, opt in runs:
        if not run.time_ok(f"option {opt} on {cfg.key}", (60 if name == "14B" else 10) + reserve_s):
            continue
        option = OPTIONS[opt]
        try:
            if option.fp8 and not getattr(model, "_bench_fp8", False):
                causal.quantize_blocks_fp8(model)
                model._bench_fp8 = True
                free_memory()
            with option.enter():
                row, lat = time_config(stored_in_fp8(model) if option.fp8_storage else model, run.contexts[name],
                                       cfg, run.setup,
                                       run.plan.option_repeats_14b if big else run.plan.option_repeats, run.log,
                                       reference=run.exact_latents.get(cfg.key), option=opt,
                                       warmups=run.plan.warmups, fused=option.fused_kernels,
                                       cuda_graphs=option.cuda_graphs, flash=option.flash_attention)
            row["exact_option"] = option.exact
            run.option_latents[f"{cfg.key}:{opt}"] = lat
        except Exception as e:
            traceback.print_exc()
            row = {"config": cfg.key, "option": opt, "error": f"{type(e).__name__}: {e}"}
        run.results["options"].append(row)
        run.save()


def stored_in_fp8(model: causal.CausalWanModel) -> causal.CausalWanModel:
    """A copy of `model` whose linear layers hold the values ComfyUI stores with weight_dtype fp8_e4m3fn: every
    weight and bias rounded to float8_e4m3fn (casting them back to bf16 at each use, as ComfyUI does, is exact)."""
    stored = copy.deepcopy(model)
    for layer in stored.modules():
        if isinstance(layer, torch.nn.Linear):
            for p in (layer.weight, layer.bias):
                if p is not None:
                    p.data = p.data.to(torch.float8_e4m3fn).to(p.dtype)
    return stored


def run_profiles(run: Run, name: str, model: causal.CausalWanModel) -> None:
    for opt in ["exact"] + ([run.plan.profile_option] if run.plan.profile_option else []):
        for where in run.plan.profile_slots:
            if not run.time_ok(f"profile [{opt}] {name} {where}", 20 if name == "14B" else 5):
                continue
            try:
                with OPTIONS[opt].enter():
                    run.results["profiles"].append(profile_forwards(model, run.contexts[name], run.setup,
                                                                    run.plan.profile_forwards, opt, run.log, where,
                                                                    fused=OPTIONS[opt].fused_kernels))
                free_memory()  # the profile's cache and text K/V
            except Exception as e:
                traceback.print_exc()
                run.results["errors"].append(f"profile [{opt}] {name} {where} failed: {type(e).__name__}: {e}")
            run.save()


def run_fp32_reference(run: Run, name: str, model: causal.CausalWanModel) -> None:
    key = run.plan.fp32_reference
    if not key or CONFIGS[key].model != name or not run.time_ok("fp32 reference", 40):
        return
    if getattr(model, "_bench_fp8", False):
        run.results["notes"].append("fp32 reference skipped: the model's block linears were converted to fp8")
        return
    try:
        run.results["fp32_reference"] = fp32_reference(model, run.contexts[name], CONFIGS[key], run.setup,
                                                       run.exact_latents, run.option_latents, run.log)
    except Exception as e:
        traceback.print_exc()
        run.results["errors"].append(f"fp32 reference failed: {type(e).__name__}: {e}")
    run.save()
