"""A plain loop of platform calls for profiling and CPU a call (issue 28, item 2): prints the
embedded server's and controller's pids (for py-spy / strace), runs CALLS fresh geometries
after 10 warm calls, and prints wall and every process's CPU a call (psutil).

    BENCHROOT=<checkout> python bench/ase_call_loop.py 300 [SEED]
"""

import json, os, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, os.environ["BENCHROOT"])
from bench.baselines import ONE_THREAD_ENV, scoped_env
from bench.ase_calculator import geometries, time_calls
from bench.cpu_per_batch import _children_cpu, _cpu
import psutil
calls = int(sys.argv[1])
with tempfile.TemporaryDirectory() as home, scoped_env({"ATOMIVERSE_HOME": home, "ATOMIVERSE_BASE_URL": None, "ATOMIVERSE_API_KEY": None, **ONE_THREAD_ENV}):
    import atomiverse
    from atomiverse.ase import AtomiverseCalculator
    from atomiverse.levels import GFN2_XTB
    atomiverse.start_local()
    try:
        s = psutil.Process(json.loads((Path(home)/"server.json").read_text())["pid"])
        c = psutil.Process(json.loads((Path(home)/"controller.json").read_text())["pid"])
        print("PIDS", s.pid, c.pid, [p.pid for p in c.children()], flush=True)
        time_calls(geometries("CCO", 10, seed=99), AtomiverseCalculator(GFN2_XTB, compute_target="local"))
        frames = geometries("CCO", calls, seed=int(sys.argv[2]) if len(sys.argv) > 2 else 5)
        b = (time.process_time(), _cpu(s), _cpu(c), _children_cpu(c))
        t = time_calls(frames, AtomiverseCalculator(GFN2_XTB, compute_target="local"))
        a = (time.process_time(), _cpu(s), _cpu(c), _children_cpu(c))
        d = [(y - x) / calls * 1e3 for x, y in zip(b, a)]
        print(f"RESULT wall {t*1e3:.2f} client {d[0]:.2f} server {d[1]:.2f} controller {d[2]:.2f} workers {d[3]:.2f} total {sum(d):.2f} load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        atomiverse.stop_local()
