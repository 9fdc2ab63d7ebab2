"""The ``kinodiff`` command: a thin layer over the Python APIs in ``agents``, ``envs``, ``policies``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from agents.cli.dataclass_args import add_dataclass_args, build_config, parse_assignments

# Bad input ends with one line and exit code 2; anything else is a bug and keeps its traceback.
# OSError: the world outside the program (a full disk, a busy store, a refused socket), not a bug.
USER_ERRORS = (ValueError, OSError, KeyError)


def _cmd_envs(args: argparse.Namespace) -> int:
    from envs import ENV_SPECS

    for env_id, spec in sorted(ENV_SPECS.items()):
        experts = ", ".join(spec.experts) or "-"
        print(f"{env_id:32s} {spec.description} [experts: {experts}]")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from agents.collect import CollectConfig, collect

    summary = collect(build_config(CollectConfig, args, env_kwargs=parse_assignments(args.env_kwargs)))
    print(f"collected {summary['new_episodes']} episodes into {summary['out']} "
          f"({summary['episodes']} episodes, {summary['steps']} steps in the store)")
    print(json.dumps(summary))
    return 0


def _cmd_train_bc(args: argparse.Namespace) -> int:
    from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc

    train = build_config(BcTrainConfig, args, dest_prefix="train_")
    run = BcRunConfig(data=args.data, policy=args.policy, out=args.out,
                      policy_config=parse_assignments(args.set), train=train)
    out = train_bc(run, resume=args.resume)
    last = (out / "logs" / "metrics.jsonl").read_text().strip().splitlines()[-1]
    print(f"trained {args.policy} into {out}; last log line: {last}")
    return 0


def _cmd_train_distill(args: argparse.Namespace) -> int:
    from agents.train.distill import DistillConfig, distill, distill_train_defaults

    defaults = distill_train_defaults()
    train = dataclasses.replace(defaults, **{f.name: getattr(args, "train_" + f.name)
                                             for f in dataclasses.fields(defaults)
                                             if getattr(args, "train_" + f.name) is not None})
    out = distill(build_config(DistillConfig, args, train=train), resume=args.resume)
    last = (out / "logs" / "metrics.jsonl").read_text().strip().splitlines()[-1]
    print(f"distilled a one-step student into {out}; last log line: {last}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from agents.evaluate import EvalConfig, evaluate
    from agents.report import write_report
    from envs import make_env

    config = build_config(EvalConfig, args, env_kwargs=parse_assignments(args.env_kwargs))
    out = Path(args.out) if args.out else Path(config.run) / "eval"
    summary, results = evaluate(config)
    env = make_env(config.env)
    name = Path(config.run).name or "policy"
    files = write_report(out, {name: summary}, {name: results}, getattr(env.unwrapped, "layout", None),
                         name if config.video else None, env.metadata.get("render_fps", 20),
                         extra={"env_id": config.env})
    lo, hi = summary["success_ci95"]
    cov = summary.get("max_coverage_mean")
    cov_text = f", mean max coverage {cov:.2f}" if cov is not None else ""
    print(f"{name} on {config.env}: success {summary['success_rate']:.2f} "
          f"(95% CI {lo:.2f}-{hi:.2f}){cov_text} over {summary['episodes']} episodes; "
          f"report {files['md']}")
    if config.uncertainty:
        from agents.uncertainty_eval import evaluate_uncertainty_for

        print(f"uncertainty report {evaluate_uncertainty_for(config, out)}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from agents.calibrate import CalibrateConfig, calibrate

    s = calibrate(build_config(CalibrateConfig, args, env_kwargs=parse_assignments(args.env_kwargs)))
    print(f"calibrated {s['policy_dir']} at alpha={s['alpha']} on {s['successes']} successful of "
          f"{s['episodes']} nominal episodes; combined threshold {s['combined_threshold']:.4g}")
    print(json.dumps({k: v for k, v in s.items() if k != "seeds"}))
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from agents.quickstart import QuickstartConfig, quickstart

    report = quickstart(build_config(QuickstartConfig, args))
    print(report.read_text())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from agents.deploy.export import ExportConfig, export_policy

    doc = export_policy(build_config(ExportConfig, args, overrides=parse_assignments(args.set)))
    print(f"exported {doc['policy']} policy ({doc['env_id']}, {doc['control_hz']:g} Hz) to {args.out}; "
          f"max |onnx - torch| {doc['export_check']['max_abs_diff_vs_torch']:.2e}")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from agents.deploy.session import DeployConfig, deploy, print_summary

    stats = deploy(build_config(DeployConfig, args))
    print_summary(stats, args.json)
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from agents.plan import PlanConfig, run_plan

    config = build_config(PlanConfig, args, settings=parse_assignments(args.set),
                          env_kwargs=parse_assignments(args.env_kwargs))
    summary = run_plan(config)
    s = summary["summaries"][config.planner]
    score = summary["normalized_score"]
    print(f"{config.planner} on {config.env}: success {s['success_rate']:.2f} over {s['episodes']} "
          f"episodes, return {s['return_mean']:.2f}, normalized score "
          f"{'n/a' if score is None else f'{score:.1f}'}, plan p50 {s['latency_ms_p50']:.1f} ms; "
          f"report {summary['report']}")
    return 0


def _cmd_train_sb3(args: argparse.Namespace) -> int:
    """``train rl|residual|dppo|qcritic``: build the trainer's config from the options and run it."""
    from agents.train.dppo import DppoConfig, train_dppo
    from agents.train.qcritic import QCriticConfig, train_qcritic
    from agents.train.residual import ResidualConfig, train_residual
    from agents.train.rl import RlConfig, train_rl

    cls, fn = {"rl": (RlConfig, train_rl), "residual": (ResidualConfig, train_residual),
               "dppo": (DppoConfig, train_dppo), "qcritic": (QCriticConfig, train_qcritic)}[args.trainer]
    extra = {"env_kwargs": parse_assignments(args.env_kwargs)}
    if hasattr(args, "set"):
        extra["algo_kwargs"] = parse_assignments(args.set)
    out = fn(build_config(cls, args, **extra))
    curve, summary = out / "logs" / "curve.jsonl", out / "logs" / "summary.json"
    rows = curve.read_text().strip().splitlines() if curve.is_file() else [summary.read_text()]
    print(f"trained {args.trainer} into {out}; first and last evaluation:")
    print(rows[0])
    print(rows[-1])
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks import run_benchmark

    path = run_benchmark(args.name, Path(args.json), quick=args.quick)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full ``kinodiff`` argument parser."""
    from agents.collect import CollectConfig
    from agents.evaluate import EvalConfig
    from agents.plan import PlanConfig
    from agents.quickstart import QuickstartConfig
    from agents.train.bc import BcTrainConfig

    parser = argparse.ArgumentParser(
        prog="kinodiff", description="Diffusion policies, trainers and planners for MuJoCo robots.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("envs", help="list registered tasks")
    p.set_defaults(func=_cmd_envs)

    p = sub.add_parser("collect", help="collect expert demonstrations into a zarr episode store")
    add_dataclass_args(p, CollectConfig)
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="task keyword arguments")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("train", help="train a policy")
    train_sub = p.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    bc = train_sub.add_parser("bc", help="behaviour cloning of any registered policy")
    bc.add_argument("--data", required=True, help="episode store to learn from")
    bc.add_argument("--policy", default="diffusion", help="registered policy name (default: diffusion)")
    bc.add_argument("--out", required=True, help="run folder")
    bc.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    bc.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                    help="policy config fields, e.g. denoiser=unet num_inference_steps=16")
    add_dataclass_args(bc, BcTrainConfig, dest_prefix="train_")
    bc.set_defaults(func=_cmd_train_bc)
    from agents.train.distill import DistillConfig, distill_train_defaults

    dist = train_sub.add_parser("distill", help="distil a diffusion policy's sampler into a one-step "
                                "student")
    add_dataclass_args(dist, DistillConfig)
    dist.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    add_dataclass_args(dist, BcTrainConfig, dest_prefix="train_",
                       defaults=dataclasses.asdict(distill_train_defaults()))
    # Unset options keep the distillation defaults (filled in by _cmd_train_distill).
    dist.set_defaults(func=_cmd_train_distill,
                      **{"train_" + f.name: None for f in dataclasses.fields(BcTrainConfig)})
    from agents.train.dppo import DppoConfig
    from agents.train.qcritic import QCriticConfig
    from agents.train.residual import ResidualConfig
    from agents.train.rl import RlConfig

    for name, cls, text in (("rl", RlConfig, "an SB3 expert (PPO, SAC, TD3) with per-task presets"),
                            ("residual", ResidualConfig, "SB3 PPO/SAC residual over a frozen policy"),
                            ("dppo", DppoConfig, "DPPO fine-tuning of a diffusion policy"),
                            ("qcritic", QCriticConfig, "the chunk critic of Q-guided sampling")):
        t = train_sub.add_parser(name, help=text)
        add_dataclass_args(t, cls)
        t.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="task keyword arguments")
        if name in ("rl", "residual"):
            t.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                           help="SB3 algorithm arguments overriding the preset, e.g. learning_rate=1e-4")
        t.set_defaults(func=_cmd_train_sb3)

    p = sub.add_parser("eval", help="evaluate a trained policy and write a report")
    add_dataclass_args(p, EvalConfig)
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="task keyword arguments")
    p.add_argument("--out", default=None, help="report folder (default: RUN/eval)")
    p.set_defaults(func=_cmd_eval)

    from agents.calibrate import CalibrateConfig

    p = sub.add_parser("calibrate", help="fit uncertainty heads and conformal alarm thresholds")
    add_dataclass_args(p, CalibrateConfig)
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="task keyword arguments")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("quickstart", help="the main job end to end on local defaults")
    add_dataclass_args(p, QuickstartConfig)
    p.set_defaults(func=_cmd_quickstart)

    from agents.deploy.export import ExportConfig
    from agents.deploy.session import DeployConfig

    p = sub.add_parser("export", help="export a trained policy to ONNX with a JSON sidecar")
    add_dataclass_args(p, ExportConfig)
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="inference settings, e.g. sampler=ddim")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("deploy", help="drive a robot with an exported policy at a fixed rate")
    add_dataclass_args(p, DeployConfig)
    p.add_argument("--json", default=None, help="write the loop statistics to this JSON file")
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("plan", help="run a planner on a task and evaluate it beside the expert")
    add_dataclass_args(p, PlanConfig)
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="planner settings, e.g. samples=128")
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="task keyword arguments")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("bench", help="run a benchmark of benchmarks/ and write its JSON")
    p.add_argument("name", help="benchmark name")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--quick", action="store_true", help="a smaller budget (smoke runs)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kinodiff`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"kinodiff: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kinodiff: interrupted; committed work is kept (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
