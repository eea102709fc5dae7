"""A sweep's plan before it runs (`harness sweep --dry-run`, and the inputs check before a sweep starts):
one trial per study, the inputs this machine lacks, the cost of the studies' trials."""

from __future__ import annotations

from typing import Any

from harness.sweep.spec import SweepFile, study_names, trial_grid


def _probe_plans(spec: SweepFile) -> tuple[dict[str, Any], list[Any]]:
    """(the probe parameters, the plans of one trial per study at them): each searched field at its first
    probe value (what a trial reads does not depend on the searched values)."""
    from harness.runner import plan_grid

    probe = {name: param.probe_values()[0] for name, param in spec.search.items()}
    return probe, [plan for _, partition in study_names(spec) for plan in plan_grid(trial_grid(spec, partition, probe))]


def unresolved_sweep_inputs(spec: SweepFile) -> list[str]:
    """Data and models the sweep's trials need that this machine cannot provide (harness.resolution)."""
    from harness.resolution import unresolved_inputs

    choice = spec._profile
    return unresolved_inputs(_probe_plans(spec)[1], full_data=bool(choice and choice.full_data))


def describe_sweep_plan(spec: SweepFile, device: str | None, usd_per_device_hour: float | None) -> str:
    """`--dry-run`'s plan of one trial per study (each searched field at its first probe value), the
    inputs this machine lacks, and the cost of the studies' trials on `device` (n_trials each)."""
    from harness.cost import total
    from harness.cost_plan import DEFAULT_DEVICE, grid_cost
    from harness.cost_profiles import CostInputError
    from harness.resolution import unresolved_inputs

    choice = spec._profile
    probe, plans = _probe_plans(spec)
    lines = [f"plan of one trial per study at {probe}: {sum(len(p.stages) for p in plans)} stages"]
    full = bool(choice and choice.full_data)
    missing = unresolved_inputs(plans, full_data=full)
    if missing:
        lines.append(f"inputs not available on this machine ({len(missing)}; the sweep cannot start):")
        lines += ["  " + m.replace("\n", "\n  ") for m in missing]
    device = device or (choice.device_profile if choice else None) or DEFAULT_DEVICE
    try:
        found = grid_cost(plans, device, choice.launch if choice else {}, usd_per_device_hour, full_data=full)
    except CostInputError as exc:
        return "\n".join([*lines, f"cost estimate on {device}: not available: {exc}"])
    per_trial = total([e for _, e in found.stages if _.kind != "prepare_data"], "one trial per study")
    usd = "n/a" if per_trial.usd is None else f"${per_trial.usd * spec.n_trials:,.2f}"
    lines.append(f"cost on {found.device}: one trial per study {per_trial.flops:.3g} FLOPs, {per_trial.hours:.3g} h; "
                 f"x {spec.n_trials} trials: {per_trial.flops * spec.n_trials:.3g} FLOPs, "
                 f"{per_trial.device_hours * spec.n_trials:.3g} device-hours, {usd} (shared stages, such as the "
                 "reward models and the baseline, counted once per trial: an upper bound)")
    return "\n".join(lines)
