"""Throughput of the platform against the baselines a chemist would otherwise pick.

    python bench/throughput.py [--quick] [--json PATH] [--skip-platform]

In this process tree, one run at a time: (a) ``direct`` (a multiprocessing pool of xtb-python
workers), (b) the platform (embedded server + local controller, through the SDK), (c) the
``xtb`` program once per molecule. Each does the same single points (default 200) and
geometry optimisations (default 50, the first molecules of the same set); ``--quick`` does 10
and 4. A single-point run takes seconds, and on a shared VM one run can be a few percent off:
direct and the platform each run them three times (``--sp-repeats``), and the median run
counts. Direct and platform runs alternate (direct, platform; platform, direct; ...), both
instances warm throughout, so a drift in the machine's speed weighs on both sides of a ratio
alike. Prints a table, writes every figure to JSON (default
``bench/results/throughput.json``).

Exit status 1 when the platform part fails, a platform job fails, or a platform single-point
energy deviates from the direct one by more than 1e-6 Hartree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform as _platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/throughput.py` puts bench/ first, not the repo
    sys.path.insert(0, str(ROOT))

from bench.baselines import (  # noqa: E402
    XTB_OPT_LEVELS,
    BaselineResult,
    DirectPool,
    OptSettings,
    XtbProgramNotFound,
    cpu_delta,
    cpu_snapshot,
    find_xtb_program,
    median_run,
    opt_settings,
    physical_cores,
    run_xtb_program,
    scoped_env,
    xtb_opt_level_for,
    xtb_program_version,
)
from bench.molecules import RESULTS_DIR, benchmark_molecules  # noqa: E402

SP_TOLERANCE_HARTREE = 1e-6
SUBMIT_BATCH_MAX = 1000  # the server's limit per submit_batch request
DEFAULT_JSON = RESULTS_DIR / "throughput.json"
WATER = ([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])


# ==== (b) the platform =======================================================================

def _find_controller(home: str) -> Any:
    """The local controller process: a descendant of this process (embedded server) or of the
    server, whose command line mentions atomiverse_controller; the top-most such process."""
    import psutil

    def is_controller(p: psutil.Process) -> bool:
        try:
            return any("atomiverse_controller" in part for part in p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    candidates = [p for p in psutil.Process().children(recursive=True) if is_controller(p)]
    if not candidates:  # server started detached: match on the instance's home directory
        for p in psutil.process_iter():
            try:
                if is_controller(p) and p.environ().get("ATOMIVERSE_HOME") == home:
                    candidates.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    pids = {p.pid for p in candidates}
    for p in candidates:
        try:
            if p.ppid() not in pids:
                return p
        except psutil.NoSuchProcess:
            continue
    return None


def sample_controller_idle(home: str, seconds: float = 5.0) -> dict[str, Any]:
    """CPU percent (of one core) over ``seconds``, RSS and PSS of the idle controller and its
    workers. RSS counts the pages of shared libraries (libxtb, OpenBLAS, SciPy) once per process
    that maps them; PSS splits each shared page among its processes, so the group's PSS is
    what the group costs the machine."""
    import psutil

    ctl = _find_controller(home)
    if ctl is None:
        return {"error": "no process with 'atomiverse_controller' in its command line found"}
    procs = {"controller": [ctl]}
    try:
        procs["workers"] = ctl.children(recursive=True)
        server = ctl.parent()
        if server is not None and server.pid != os.getpid():
            procs["server"] = [server]
    except psutil.NoSuchProcess:
        return {"error": "controller exited while being sampled"}
    for group in procs.values():
        for p in group:
            try:
                p.cpu_percent(None)
            except psutil.NoSuchProcess:
                pass
    time.sleep(seconds)
    out: dict[str, Any] = {"seconds": seconds, "controller_pid": ctl.pid}
    for name, group in procs.items():
        cpu, rss, pss, alive = 0.0, 0, 0, 0
        for p in group:
            try:
                cpu += p.cpu_percent(None)
                memory = p.memory_full_info()
                rss += memory.rss
                pss += getattr(memory, "pss", memory.rss)  # PSS is Linux-only
                alive += 1
            except psutil.NoSuchProcess:
                pass  # e.g. an idle worker the controller stopped meanwhile
        if name == "workers":
            out["n_workers"] = alive
        out[f"{name}_cpu_percent"] = cpu
        out[f"{name}_rss_bytes"] = rss
        out[f"{name}_pss_bytes"] = pss
    for kind in ("rss", "pss"):
        out[f"total_{kind}_bytes"] = out[f"controller_{kind}_bytes"] + out[f"workers_{kind}_bytes"]
    return out


def sample_after_retirement(home: str, seconds: float) -> dict[str, Any]:
    """Wait until the idle controller has stopped the workers it does not keep warm (at most
    its ``worker_idle_seconds`` and 30 s more), then sample it like
    :func:`sample_controller_idle`."""
    from atomiverse_controller.config import load_config

    # The settings the local controller resolves from the same environment and files.
    config = load_config(None, {})
    keep, timeout = config.warm_workers, config.worker_idle_seconds + 30.0
    t0 = time.perf_counter()
    while True:
        ctl = _find_controller(home)
        if ctl is None:
            return {"error": "no process with 'atomiverse_controller' in its command line found"}
        try:
            n_workers = len(ctl.children())
        except Exception:  # noqa: BLE001 - psutil races with exiting processes
            n_workers = keep + 1
        if n_workers <= keep:
            break
        if time.perf_counter() - t0 > timeout:
            return {"error": f"{n_workers} workers still running after {timeout:.0f} s idle"}
        time.sleep(0.5)
    out = sample_controller_idle(home, seconds)
    out["waited_seconds"] = time.perf_counter() - t0
    return out


def _platform_pids(home: str) -> list[int]:
    """This process, the server, the controller and its workers."""
    pids = [os.getpid()]
    ctl = _find_controller(home)
    if ctl is not None:
        try:
            pids += [ctl.pid, *(c.pid for c in ctl.children(recursive=True))]
            server = ctl.parent()
            if server is not None and server.pid != os.getpid():
                pids.append(server.pid)
        except Exception:  # noqa: BLE001 - psutil races with exiting processes
            pass
    return pids


def _platform_batch(atomiverse: Any, jobs: list[Any],
                    home: str) -> tuple[float, float, list[dict[str, Any]]]:
    """Submit ``jobs`` (batches of at most 1000), wait for all; wall and CPU seconds, records
    in job order (a rejected submission gets a record with state "rejected")."""
    cpu0 = cpu_snapshot(_platform_pids(home))
    t0 = time.perf_counter()
    entries: list[dict[str, Any]] = []
    for start in range(0, len(jobs), SUBMIT_BATCH_MAX):
        chunk = jobs[start:start + SUBMIT_BATCH_MAX]
        res = atomiverse.submit_batch([j.model_dump() for j in chunk], compute_target="local")
        entries += res["jobs"]
    ids = [e["job_id"] for e in entries if e.get("job_id")]
    records = atomiverse.wait_jobs(ids) if ids else []
    wall = time.perf_counter() - t0
    cpu = cpu_delta(cpu0, cpu_snapshot(_platform_pids(home)))
    by_id = {r["job_id"]: r for r in records}
    return wall, cpu, [by_id.get(e.get("job_id"), {"state": "rejected", "error": e.get("error")})
                       for e in entries]


def _platform_result(kind: str, molecules: list, wall: float, cpu: float,
                     records: list[dict], workers: int | None) -> BaselineResult:
    energies: list[float | None] = []
    errors: list[str | None] = []
    steps: list[int | None] = []
    converged: list[bool | None] = []
    for r in records:
        result = r.get("result") or {}
        ok = r.get("state") == "done" and result.get("energy_hartree") is not None
        energies.append(float(result["energy_hartree"]) if ok else None)
        errors.append(None if ok else f"{r.get('state')}: {r.get('error')}")
        s = result.get("n_steps", result.get("steps"))
        steps.append(s if isinstance(s, int) else None)
        c = result.get("converged")
        converged.append(c if isinstance(c, bool) else None)
    return BaselineResult(
        name="platform", kind=kind,  # type: ignore[arg-type]
        workers=workers or 0, wall_seconds=wall,
        ids=[m[0] for m in molecules], energies=energies, errors=errors, steps=steps,
        converged=converged, settings={"compute_target": "local", "use_cache": False},
        cpu_seconds=cpu)


def run_platform(sp_molecules: list, opt_molecules: list, opt: OptSettings | None = None,
                 latency_repeats: int = 20, idle_seconds: float = 5.0,
                 worker_idle_seconds: float | None = None, sp_repeats: int = 1,
                 paired: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time the same workloads on a fresh embedded instance (server + local controller).
    ``worker_idle_seconds``: the controller's setting of that name (None: its default).
    ``sp_repeats``: submit the single points that many times, one batch after another; the
    median run counts (:func:`bench.baselines.median_run`).
    ``paired(kind)``: runs the baseline's counterpart of one platform batch of ``kind``
    ("sp" or "opt"); called next to every batch, before it in even rounds and after it in
    odd ones, so both sides see the machine as it was at that moment.

    Returns ``{"sp": BaselineResult, "opt": BaselineResult, "latency": {...},
    "controller_idle": {...}, "controller_idle_retired": {...}, "startup_seconds": float}``."""
    home = tempfile.mkdtemp(prefix="bench-atomiverse-home-")
    # A fresh embedded instance: its own home; no remote server or key from the environment.
    fresh = {"ATOMIVERSE_HOME": home, "ATOMIVERSE_BASE_URL": None, "ATOMIVERSE_API_KEY": None,
             "ATOMIVERSE_CONTROLLER_WORKER_IDLE_SECONDS":
                 None if worker_idle_seconds is None else str(worker_idle_seconds)}
    try:
        with scoped_env(fresh):
            return _run_platform(home, sp_molecules, opt_molecules, opt or opt_settings(),
                                 latency_repeats, idle_seconds, sp_repeats, paired)
    finally:
        if not os.path.isdir(os.path.join(home, "logs")):  # failed before the server started
            shutil.rmtree(home, ignore_errors=True)


def _run_platform(home: str, sp_molecules: list, opt_molecules: list, opt: OptSettings,
                  latency_repeats: int, idle_seconds: float, sp_repeats: int,
                  paired: Callable[[str], None] | None) -> dict[str, Any]:
    import atomiverse
    from atomiverse.levels import GFN2_XTB

    def atoms(numbers: list[int], positions: list[list[float]]) -> Any:
        return atomiverse.Atoms(numbers=numbers, positions=positions)

    sp_jobs = [atomiverse.SinglePointEnergy(atoms=atoms(z, p), level_of_theory=GFN2_XTB,
                                            use_cache=False, name=f"bench-sp-{i}")
               for i, (_, z, p) in enumerate(sp_molecules)]
    opt_jobs = [atomiverse.GeometryOptimization(atoms=atoms(z, p), level_of_theory=GFN2_XTB,
                                                use_cache=False, name=f"bench-opt-{i}",
                                                optimizer=opt.optimizer)
                for i, (_, z, p) in enumerate(opt_molecules)]
    for j in opt_jobs[:1]:  # the platform runs its defaults; the direct baseline must match
        if (j.optimizer, j.fmax, j.max_steps) != (opt.optimizer, opt.fmax, opt.max_steps):
            raise RuntimeError(f"platform optimises with {j.optimizer}, fmax {j.fmax}, max_steps "
                               f"{j.max_steps}; the direct baseline used {opt}")

    out: dict[str, Any] = {}
    ok = False
    t0 = time.perf_counter()
    try:
        atomiverse.configure()  # a default client made earlier in this process points elsewhere
        atomiverse.start_local()
        out["startup_seconds"] = time.perf_counter() - t0
        ctl = _find_controller(home)
        n_workers = len(ctl.children()) if ctl is not None else None

        for kind, jobs, molecules, repeats in (("sp", sp_jobs, sp_molecules, sp_repeats),
                                               ("opt", opt_jobs, opt_molecules, 1)):
            out[kind] = None
            runs = []
            for round_ in range(repeats if jobs else 0):
                if paired is not None and round_ % 2 == 0:
                    paired(kind)
                runs.append(_platform_result(kind, molecules,
                                             *_platform_batch(atomiverse, jobs, home),
                                             n_workers))
                if paired is not None and round_ % 2 == 1:
                    paired(kind)
            out[kind] = median_run(runs) if runs else None

        def one_water() -> float:
            t = time.perf_counter()
            job = atomiverse.SinglePointEnergy(atoms=atoms(*WATER), level_of_theory=GFN2_XTB,
                                               use_cache=False, name="bench-latency")
            job.submit(wait=True, compute_target="local")
            dt = time.perf_counter() - t
            if str(job.state) != "done":
                raise RuntimeError(f"latency job ended {job.state}: {job.error}")
            return dt

        one_water()  # connection and code paths warm; not counted
        samples = [one_water() for _ in range(latency_repeats)]
        out["latency"] = {"median_seconds": statistics.median(samples),
                          "min_seconds": min(samples), "max_seconds": max(samples),
                          "samples_seconds": samples}
        time.sleep(1.0)  # let the last job's bookkeeping settle
        out["controller_idle"] = sample_controller_idle(home, idle_seconds)
        out["controller_idle_retired"] = sample_after_retirement(home, idle_seconds)
        ok = True
    finally:
        atomiverse.stop_local()
        if ok or not os.path.isdir(os.path.join(home, "logs")):
            shutil.rmtree(home, ignore_errors=True)
        else:  # keep server.log / controller.log of a failed run
            print(f"platform run failed; its logs are kept under {home}/logs", file=sys.stderr)
    return out


# ==== report =================================================================================

def _max_dev(a: BaselineResult | None, b: BaselineResult | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return None
    pairs = [(x, y) for x, y in zip(a.energies, b.energies, strict=True)
             if x is not None and y is not None]
    if not pairs:
        return {"max_abs_hartree": None, "compared": 0}
    devs = [abs(x - y) for x, y in pairs]
    return {"max_abs_hartree": max(devs), "mean_abs_hartree": sum(devs) / len(devs),
            "compared": len(pairs), "signed_mean_hartree": sum(y - x for x, y in pairs)
            / len(pairs)}


def _ratio(a: BaselineResult | None, b: BaselineResult | None) -> float | None:
    if a is None or b is None or b.wall_seconds <= 0:
        return None
    return a.wall_seconds / b.wall_seconds


def machine_info() -> dict[str, Any]:
    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "physical_cores": physical_cores(), "logical_cpus": psutil.cpu_count(),
        "cpu_model": model or _platform.processor(), "memory_bytes": psutil.virtual_memory().total,
        "os": _platform.platform(), "python": _platform.python_version(),
    }
    try:
        from importlib.metadata import version

        info["xtb_python"] = version("xtb")
    except Exception:  # noqa: BLE001
        pass
    try:
        info["xtb_program"] = xtb_program_version()
    except Exception:  # noqa: BLE001
        info["xtb_program"] = None
    return info


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _fmt_r(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log or a pipe: do not squeeze the table into 80 columns
        console = Console(width=120)
    m = report["machine"]
    table = Table(title=f"Throughput, {m['physical_cores']} physical cores "
                        f"({m['logical_cpus']} logical), {m['cpu_model']}")
    table.caption = ("direct: multiprocessing pool of xtb-python workers; xtb program: one "
                     "`xtb` process per molecule; wall time (molecules per second), then CPU time "
                     "of all processes involved")
    for col in ("workload", "direct", "platform", "xtb program", "platform / direct",
                "platform / xtb program"):
        table.add_column(col, justify="right" if col != "workload" else "left")
    for kind, label in (("sp", "single points"), ("opt", "optimisations")):
        res = report["results"][kind]
        n = report["config"][f"n_{kind}"]
        if n == 0:
            continue

        def cell(name: str) -> str:
            r = res.get(name)
            if r is None:
                return "skipped" if name in report["skipped"] else "failed"
            s = f"{r['wall_seconds']:.2f} s ({r['per_second']:.1f}/s)"
            if len(samples := r.get("wall_samples_seconds") or []) > 1:
                s += f"\nmedian of {len(samples)}: {min(samples):.2f}-{max(samples):.2f} s"
            if r.get("cpu_seconds") is not None:
                s += f"\ncpu {r['cpu_seconds']:.1f} s"
            return s + (f" [{r['n_failed']} failed]" if r["n_failed"] else "")

        table.add_row(f"{n} {label}", cell("direct"), cell("platform"), cell("xtb_program"),
                      _fmt_r(report["ratios"][kind]["platform_over_direct"]),
                      _fmt_r(report["ratios"][kind]["platform_over_xtb_program"]))
    console.print(table)
    cfg = report["config"]
    not_conv = {name: sum(c is False for c in r["converged"])
                for name, r in report["results"]["opt"].items() if r is not None}
    kind = "" if cfg["opt_optimizer"] == "geomeTRIC" else "ASE "
    console.print(f"optimisations: {kind}{cfg['opt_optimizer']}, fmax "
                  f"{cfg['opt_fmax_ev_per_angstrom']} eV/A, at most {cfg['opt_max_steps']} steps (from {cfg['opt_settings_from']})"
                  f"; xtb program --opt {cfg['xtb_program_opt_level']}; not converged: "
                  + ", ".join(f"{k} {v}" for k, v in not_conv.items()))

    checks = report["energy_checks"]
    sp = checks["sp_platform_vs_direct"]
    if sp is not None:
        ok = sp["max_abs_hartree"] is not None and sp["max_abs_hartree"] <= SP_TOLERANCE_HARTREE
        console.print(f"single points, platform vs direct: max |dE| = "
                      f"{sp['max_abs_hartree']:.2e} Eh over {sp['compared']} "
                      f"[{'OK' if ok else 'FAIL'}, tolerance {SP_TOLERANCE_HARTREE:g}]"
                      if sp["max_abs_hartree"] is not None else
                      "single points, platform vs direct: nothing to compare [FAIL]")
    for key, label in (("sp_xtb_program_vs_direct", "single points, xtb program vs direct"),
                       ("opt_platform_vs_direct", "optimisations, platform vs direct"),
                       ("opt_xtb_program_vs_direct", "optimisations, xtb program vs direct")):
        c = checks[key]
        if c is not None and c["max_abs_hartree"] is not None:
            console.print(f"{label}: max |dE| = {c['max_abs_hartree']:.2e} Eh, mean signed "
                          f"{c['signed_mean_hartree']:+.2e} Eh ({c['compared']} molecules)")
    p = report.get("platform") or {}
    if "error" in p:
        console.print(f"[red]platform part failed:[/red] {p['error']}")
    if "startup_seconds" in p:
        console.print(f"platform start_local(): {p['startup_seconds']:.2f} s")
    lat = p.get("latency")
    if lat:
        ms = {k: lat[f"{k}_seconds"] * 1000 for k in ("median", "min", "max")}
        console.print(f"latency, one water single point, submit(wait=True) to result: median "
                      f"{ms['median']:.1f} ms (min {ms['min']:.1f}, max {ms['max']:.1f}, "
                      f"n={len(lat['samples_seconds'])})")
    _print_idle(console, "idle local controller, right after the runs",
                p.get("controller_idle"))
    retired = p.get("controller_idle_retired")
    if retired and "waited_seconds" in retired:
        label = f"idle local controller, once idle workers stopped ({retired['waited_seconds']:.0f}" \
                " s later)"
    else:
        label = "idle local controller, once idle workers stopped"
    _print_idle(console, label, retired)
    la, lb = m["load_average_at_start"][0], m["load_average_at_end"][0]
    if max(la, lb) > 0.5:
        console.print(f"[yellow]note:[/yellow] 1-minute load average {la:.2f} at start, {lb:.2f} "
                      "at end: other work was running, the timings are not clean")
    console.print(f"JSON: {report['json_path']}")


def _print_idle(console: Any, label: str, idle: dict[str, Any] | None) -> None:
    if not idle:
        return
    if "error" in idle:
        console.print(f"{label}: {idle['error']}")
        return
    mb = 1024 * 1024
    console.print(f"{label}, over {idle['seconds']:.0f} s: CPU "
                  f"{idle['controller_cpu_percent']:.1f}% (+ "
                  f"{idle['workers_cpu_percent']:.1f}% in {idle['n_workers']} workers); RSS "
                  f"{idle['controller_rss_bytes'] / mb:.0f} MB controller + "
                  f"{idle['workers_rss_bytes'] / mb:.0f} MB workers = "
                  f"{idle['total_rss_bytes'] / mb:.0f} MB; PSS (shared pages split) "
                  f"{idle['controller_pss_bytes'] / mb:.0f} + "
                  f"{idle['workers_pss_bytes'] / mb:.0f} = {idle['total_pss_bytes'] / mb:.0f} MB")


# ==== main ===================================================================================

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 single points and 4 optimisations")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    ap.add_argument("--skip-platform", action="store_true", help="only the two baselines")
    ap.add_argument("--skip-xtb-program", action="store_true", help="skip the xtb program")
    ap.add_argument("--n-sp", type=int, help="number of single points (default 200, quick 10)")
    ap.add_argument("--n-opt", type=int, help="number of optimisations (default 50, quick 4)")
    ap.add_argument("--xtb-opt-level", choices=list(XTB_OPT_LEVELS),
                    help="xtb program --opt level (default: the level nearest the platform's "
                         "fmax)")
    ap.add_argument("--sp-repeats", type=int,
                    help="run the single points this many times on direct and on the platform "
                         "and count the median run (default 3, quick 1): a run takes seconds, "
                         "and one run's noise is a few percent")
    ap.add_argument("--workers", type=int, help="baseline workers (default: physical cores)")
    ap.add_argument("--optimizer", help="optimiser for the platform and the direct baseline "
                                        "(default: the platform's, ANC-RFO; or BFGS-Lindh, LBFGS, "
                                        "BFGS, FIRE, geomeTRIC)")
    args = ap.parse_args(argv)

    if not args.skip_xtb_program:  # fail before spending minutes on the other baselines
        try:
            find_xtb_program()
        except XtbProgramNotFound as exc:
            print(f"error: {exc} Or pass --skip-xtb-program.", file=sys.stderr)
            return 2
    load_at_start = os.getloadavg()  # other work on the machine skews every figure
    # 0 is a real count (profile one workload alone), so test against None, not truthiness
    n_sp = args.n_sp if args.n_sp is not None else (10 if args.quick else 200)
    n_opt = args.n_opt if args.n_opt is not None else (4 if args.quick else 50)
    if n_sp < 0 or n_opt < 0 or n_sp + n_opt == 0:
        ap.error("--n-sp and --n-opt must be >= 0 and not both 0")
    sp_repeats = args.sp_repeats if args.sp_repeats is not None else (1 if args.quick else 3)
    if sp_repeats < 1:
        ap.error("--sp-repeats must be >= 1")
    mols = benchmark_molecules(max(n_sp, n_opt))
    sp_mols, opt_mols = mols[:n_sp], mols[:n_opt]
    workers = args.workers or physical_cores()
    opt = opt_settings()  # the platform's GeometryOptimization defaults
    if args.optimizer:
        opt = dataclasses.replace(opt, optimizer=args.optimizer,
                                  source=f"{opt.source}, optimizer from --optimizer")
    xtb_opt_level = args.xtb_opt_level or xtb_opt_level_for(opt.fmax)

    results: dict[str, dict[str, BaselineResult | None]] = {"sp": {}, "opt": {}}
    skipped = []
    exit_code = 0

    # (a) direct and (b) platform, in pairs: each platform batch runs next to a direct run of
    # the same molecules, so a machine that speeds up or slows down over the minutes of a
    # benchmark (a VM's neighbours, clock boost) moves both sides of a ratio alike.
    direct_runs: dict[str, list[BaselineResult]] = {"sp": [], "opt": []}
    wanted = {"sp": sp_repeats if sp_mols else 0, "opt": 1 if opt_mols else 0}
    platform_out: dict[str, Any] | None = None
    with DirectPool(workers) as pool:
        def run_direct(kind: str) -> None:
            molecules = sp_mols if kind == "sp" else opt_mols
            direct_runs[kind].append(pool.run(molecules, kind, opt))  # type: ignore[arg-type]

        if args.skip_platform:
            skipped.append("platform")
        else:
            try:
                # --quick: idle workers stop after 10 s (after the first idle sample) rather
                # than the default, so the suite sees the retired controller without waiting
                # a minute.
                platform_out = run_platform(sp_mols, opt_mols, opt,
                                            worker_idle_seconds=10.0 if args.quick else None,
                                            sp_repeats=sp_repeats, paired=run_direct)
                results["sp"]["platform"] = platform_out.pop("sp")
                results["opt"]["platform"] = platform_out.pop("opt")
            except Exception as exc:  # noqa: BLE001 - report it, still run the xtb program
                platform_out = {"error": f"{type(exc).__name__}: {exc}"}
                exit_code = 1
        for kind, n in wanted.items():  # the platform skipped, or it failed part way
            while len(direct_runs[kind]) < n:
                run_direct(kind)
    for kind in ("sp", "opt"):
        results[kind]["direct"] = median_run(direct_runs[kind]) if direct_runs[kind] else None

    # (c) the xtb program
    if args.skip_xtb_program:
        skipped.append("xtb_program")
    else:
        results["sp"]["xtb_program"] = (run_xtb_program(sp_mols, "sp", workers)
                                        if sp_mols else None)
        results["opt"]["xtb_program"] = (run_xtb_program(opt_mols, "opt", workers,
                                                         opt_level=xtb_opt_level)
                                         if opt_mols else None)

    def get(kind: str, name: str) -> BaselineResult | None:
        return results[kind].get(name)

    checks = {f"{kind}_{name}_vs_direct": _max_dev(get(kind, "direct"), get(kind, name))
              for kind in ("sp", "opt") for name in ("platform", "xtb_program")}
    ratios = {kind: {"platform_over_direct": _ratio(get(kind, "platform"), get(kind, "direct")),
                     "platform_over_xtb_program": _ratio(get(kind, "platform"),
                                                         get(kind, "xtb_program")),
                     "xtb_program_over_direct": _ratio(get(kind, "xtb_program"),
                                                       get(kind, "direct"))}
              for kind in ("sp", "opt")}
    if "platform" not in skipped and platform_out is not None and "error" not in platform_out:
        sp_check = checks["sp_platform_vs_direct"]
        if sp_mols and (sp_check is None or sp_check["max_abs_hartree"] is None
                        or sp_check["max_abs_hartree"] > SP_TOLERANCE_HARTREE):
            exit_code = 1
        if any(r.n_failed for k in ("sp", "opt") if (r := get(k, "platform")) is not None):
            exit_code = 1

    report = {
        "machine": {**machine_info(), "load_average_at_start": load_at_start,
                    "load_average_at_end": os.getloadavg()},
        "config": {"quick": args.quick, "n_sp": n_sp, "n_opt": n_opt, "workers": workers,
                   "sp_repeats": sp_repeats,
                   "method": "GFN2-xTB", "opt_optimizer": opt.optimizer,
                   "opt_fmax_ev_per_angstrom": opt.fmax, "opt_max_steps": opt.max_steps,
                   "opt_settings_from": opt.source, "xtb_program_opt_level": xtb_opt_level,
                   "sp_tolerance_hartree": SP_TOLERANCE_HARTREE,
                   "molecules": "bench/molecules.py (RDKit NCI first_5K.smi, ETKDGv3 seed 42, "
                                "MMFF)"},
        "skipped": skipped,
        "results": {kind: {name: (r.to_dict() if r is not None else None)
                           for name, r in results[kind].items()} for kind in results},
        "ratios": ratios,
        "energy_checks": checks,
        "platform": platform_out,
        "exit_code": exit_code,
        "json_path": str(args.json),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print_report(report)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
