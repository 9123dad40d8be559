"""Packed seeds (algos/packing.py, experiments/trainer.py): an unpacked run computes exactly what it did
before packing existed, and a pack of S seeds trains each seed as that seed alone would."""
import json
import sys
from pathlib import Path

import pytest
import torch

GOLDEN_DIR = Path(__file__).parent / "data" / "unpacked_golden"
sys.path.insert(0, str(GOLDEN_DIR))

from make import RUNS, golden  # noqa: E402  (the script that made the golden file, run on today's code)

BEFORE_PACKING = "9acf405"  # the last commit before seeds could be packed


@pytest.fixture(scope="module")
def before_packing(tmp_path_factory):
    """The golden runs made now, on this CPU, by the code of BEFORE_PACKING (git archive of this checkout's
    history), so that kernels of another CPU cannot make a bitwise comparison fail. Without that history (a
    shallow clone) the stored tests/data/unpacked_golden/golden.json, made on the project's own machine."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    old = tmp_path_factory.mktemp("before_packing")
    archive = subprocess.run(["git", "-C", str(root), "archive", BEFORE_PACKING, "algos", "envs", "experiments",
                              "validation"], capture_output=True)
    if archive.returncode != 0:
        return json.loads((GOLDEN_DIR / "golden.json").read_text())
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    out = old / "golden.json"
    env = {**__import__("os").environ, "PYTHONPATH": str(old), "OMP_NUM_THREADS": "1"}
    made = subprocess.run([sys.executable, str(GOLDEN_DIR / "make.py"), str(out)], cwd=old, env=env,
                          capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_unpacked_runs_compute_exactly_what_they_did_before_packing(workdir, name, before_packing):
    """Metrics (every value logged) and every checkpoint tensor, bit for bit, against the same runs made
    by the suite before seeds could be packed (tests/data/unpacked_golden/make.py on commit 9acf405)."""
    torch.set_num_threads(1)
    now = golden(name, RUNS[name], "runs")
    then = before_packing[name]
    assert now["run_key"] == then["run_key"]
    assert now["counters"] == then["counters"]
    assert now["metrics"] == then["metrics"]
    assert now["learners"] == then["learners"]


# --- one update: a pack against the same seeds alone --------------------------------------------------
from algos.batch import EpisodeBatch  # noqa: E402
from algos.packing import stack_tree, unstack_tree  # noqa: E402
from experiments.api import resolve_config  # noqa: E402
from experiments.config import validate  # noqa: E402
from experiments.runner import EpisodeRunner  # noqa: E402
from experiments.trainer import build_learner  # noqa: E402
from envs import make_env  # noqa: E402

SEEDS = (0, 1, 2)
# Learner settings that take the random draws out of one update, so a pack and the seeds alone see the same
# computation: ASAE with m = 1 (its m - 1 drawn joint actions come from torch's one RNG, drawn differently in
# a pack), replays that hold exactly one batch (a sample is then the whole replay). Everything else: defaults.
EXACT = {"asae": {"m": 1}, "mappo": {"minibatches": 1}, "ippo": {"minibatches": 1}, "dop": {"buffer_size": 4}, "iql": {"buffer_size": 4}, "vdn": {"buffer_size": 4}, "qmix": {"buffer_size": 4}}
# Float32 rounding: the pack's batched kernels sum in another order than the seeds' own. Measured on this
# CPU after one update: max |difference| <= 2e-7 for every parameter (RMSprop's first steps are about
# lr * sign(g) * 10, so a rounding-level difference in g stays rounding-level in the parameter).
ATOL = 1e-5
# With Adam (learner.optimizer=adam) a few parameters differ by more: measured up to 2.2e-4 (0.4 lr) in 0.2% of
# the critic's first-layer weights after COMA's ~50 critic steps on SMAX 3m. The packed optimizer itself
# matches torch's Adam to 2e-7 on the same gradients (test below); the difference is Adam's per-element
# normalisation enlarging the rounding-level differences of gradients near zero. Bound: lr.
ATOL_ADAM = 5e-4


def _setup(algo, env):
    algo, _, optimizer = algo.partition("+")  # "coma+adam": Adam instead of RMSprop
    learner = {**EXACT.get(algo, {}), **({"optimizer": optimizer} if optimizer else {})}
    cfg = validate(resolve_config({"algo": algo, "env": env, "n_envs": 4, "batch_size": 4, "device": "cpu",
                                   "learner": learner}))
    env_ = make_env(cfg.env, cfg.n_envs)
    spec, limit = env_.info.teams[0], env_.info.episode_limit
    singles, batches = [], []
    for seed in SEEDS:
        torch.manual_seed(seed)
        learner = build_learner(cfg, spec, algo, limit, torch.device("cpu"))
        runner = EpisodeRunner(env_, {spec.name: learner.controller})
        batch, _, _ = runner.run([seed * 100 + i for i in range(cfg.n_envs)], 0, False)
        singles.append(learner)
        batches.append(batch[spec.name])
    env_.close()
    packed = build_learner(cfg, spec, algo, limit, torch.device("cpu"), seeds=len(SEEDS))
    packed.load_state_dict(stack_tree([learner.state_dict() for learner in singles]))
    return singles, batches, packed


@pytest.mark.parametrize("algo,env", [(a, {"name": "mpe_spread", "episode_limit": 25}) for a in
                                      ("asae", "coma", "iql", "vdn", "qmix", "mappo", "ippo", "dop")]
                         + [(a, {"name": "smax", "map_name": "3m"}) for a in ("asae", "coma", "qmix")]
                         + [("coma+adam", {"name": "smax", "map_name": "3m"}), ("qmix+adam", {"name": "mpe_spread"})])
def test_one_update_of_a_pack_is_each_seeds_own_update(algo, env):
    torch.set_num_threads(1)
    singles, batches, packed = _setup(algo, env)
    algo, adam = algo.split("+")[0], algo.endswith("+adam") or algo in ("mappo", "ippo", "dop")  # Adam learners
    start = [unstack_tree(packed.state_dict(), s) for s in range(len(SEEDS))]
    for s, learner in enumerate(singles):  # the pack starts from exactly the seeds' own weights
        for (k, a), b in zip(getattr(learner, _net(learner)).state_dict().items(), start[s][_net(packed)].values()):
            assert torch.equal(a, b), k
    t_env, episodes = 1000, 4
    single_metrics = [learner.train(batch, t_env, episodes) for learner, batch in zip(singles, batches)]
    packed_metrics = packed.train(EpisodeBatch.cat(batches), t_env, episodes)
    after = packed.state_dict()
    worst = 0.0
    for s, learner in enumerate(singles):
        mine = unstack_tree(after, s)
        for attr, state in learner.state_dict().items():
            if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
                for key, value in state.items():
                    worst = max(worst, float((value - mine[attr][key]).abs().max()))
        for key, value in single_metrics[s].items():
            mine = packed_metrics[key][s] if isinstance(packed_metrics[key], list) else packed_metrics[key]  # shared: epsilon
            assert mine == pytest.approx(value, rel=1e-3, abs=1e-5), key
    print(f"{algo} {env['name']}: max |packed - alone| over all parameters after one update: {worst:.2e}")
    assert worst <= (ATOL_ADAM if adam else ATOL), worst


def _net(learner):
    return "actor" if hasattr(learner, "actor") else "agent"


# --- a pack of runs -------------------------------------------------------------------------------
import threading  # noqa: E402

from experiments.api import find_runs, resolve_config as resolve, train, train_pack  # noqa: E402

PACK = {"t_max": 1500, "n_envs": 4, "batch_size": 4, "test_interval": 500, "test_episodes": 4, "log_interval": 1,
        "checkpoint_interval": 100_000, "device": "cpu", "env": {"name": "mpe_spread", "episode_limit": 25}}
TIMING = {"env_steps_per_sec"}


def _metrics(run_dir):
    data = json.loads((run_dir / "metrics.json").read_text())
    return {k: (m["steps"], m["values"]) for k, m in data.items() if k not in TIMING}


def test_each_seed_of_a_pack_is_a_complete_run_of_its_own(workdir):
    results = train_pack({**PACK, "algo": "coma"}, seeds=[3, 5], results_dir="runs")
    assert [r.status for r in results] == ["COMPLETED", "COMPLETED"]
    for seed, result in zip([3, 5], results):
        config = json.loads((result.run_dir / "config.json").read_text())
        alone = resolve({**PACK, "algo": "coma", "seed": seed})
        assert config["seed"] == seed and config["seeds"] == []
        assert config["run_key"] == result.run_key == alone["run_key"]  # the same run as `seed=N` alone
        run = json.loads((result.run_dir / "run.json").read_text())
        info = json.loads((result.run_dir / "info.json").read_text())
        assert run["status"] == "COMPLETED" and run["result"]["t_env"] >= PACK["t_max"]
        assert info["pack"] == {"seeds": [3, 5], "position": [3, 5].index(seed)}
        assert info["provenance"]["source"] in ("git", "no git checkout")  # each seed records the code that made it
        assert (result.run_dir / "checkpoint.pt").is_file()
        assert {"test_return_mean", "critic_loss", "return_mean"} <= set(_metrics(result.run_dir))
        assert [r.status for r in find_runs("runs", alone["run_key"])] == ["COMPLETED"]
        state = torch.load(result.run_dir / "checkpoint.pt", weights_only=False)
        assert state["run_key"] == alone["run_key"] and state["counters"]["t_env"] == run["result"]["t_env"]
    # the seeds learned separately: their histories differ
    assert _metrics(results[0].run_dir)["critic_loss"] != _metrics(results[1].run_dir)["critic_loss"]


def test_a_stopped_pack_resumes_exactly(workdir):
    full = train_pack({**PACK, "algo": "asae"}, seeds=[0, 1], results_dir="full")
    stop = threading.Event()
    stop.set()  # stop after the first iteration: every seed checkpointed and INTERRUPTED
    part = train_pack({**PACK, "algo": "asae"}, seeds=[0, 1], results_dir="part", stop_event=stop)
    assert [r.status for r in part] == ["INTERRUPTED", "INTERRUPTED"]
    resumed = train_pack({**PACK, "algo": "asae"}, seeds=[0, 1], results_dir="part",
                         resume_from=[str(r.run_dir) for r in part])
    assert [r.status for r in resumed] == ["COMPLETED", "COMPLETED"]
    for a, b in zip(full, resumed):
        assert _metrics(a.run_dir) == _metrics(b.run_dir)


def test_a_seed_that_diverges_fails_alone(workdir, monkeypatch):
    """Fault injection: seed 1's critic weights become NaN after the second update (a divergence no config
    can produce in one seed only). Its run ends FAILED naming the parameter and step; seed 0 completes."""
    from algos.coma import COMA

    calls = {"n": 0}
    original = COMA.train

    def train_then_break(self, batch, t_env, episodes):
        out = original(self, batch, t_env, episodes)
        calls["n"] += 1
        if self.axis.packed and calls["n"] == 2:
            with torch.no_grad():
                self.critic.out.weight[1] = float("nan")
        return out

    monkeypatch.setattr(COMA, "train", train_then_break)
    results = train_pack({**PACK, "algo": "coma"}, seeds=[0, 1], results_dir="runs")
    assert [r.status for r in results] == ["COMPLETED", "FAILED"]
    run = json.loads((results[1].run_dir / "run.json").read_text())
    line = run["fail_trace"][-1]
    assert "training diverged: parameter critic.out.weight is not finite" in line and "t_env=" in line, line
    import math
    logged = json.loads((results[1].run_dir / "metrics.json").read_text())
    assert all(math.isfinite(v) for m in logged.values() for v in m["values"])  # nothing of it after the failure


class _SingleSeedCOMA:  # a learner that does not declare the seed axis (packable = False): a user's own algorithm
    pass


def test_an_unpackable_algorithm_is_refused_in_one_line(workdir, monkeypatch):
    """Every built-in learner packs; a registered learner that does not say it can (``packable``) is refused."""
    import algos
    from algos.coma import COMA
    from validation import ConfigError

    monkeypatch.setattr(sys.modules[__name__], "_SingleSeedCOMA", type("SingleSeedCOMA", (COMA,), {"packable": False}))
    monkeypatch.setitem(algos.REGISTRY, "coma_single", f"{__name__}:_SingleSeedCOMA")
    assert all(algos.learner_class(name).packable for name in algos.REGISTRY if name != "coma_single")
    with pytest.raises(ConfigError, match="coma_single trains one seed per process"):
        train_pack({**PACK, "algo": "coma_single"}, seeds=[0, 1], results_dir="runs")
    assert not (workdir / "runs").exists()  # refused before any run started


def test_a_competitive_config_packs_both_learning_teams(workdir):
    """Predator-prey with two learning teams (ASAE predators, COMA prey): each team's learner is packed."""
    cfg = {"t_max": 300, "test_interval": 150, "test_episodes": 4, "log_interval": 1, "checkpoint_interval": 10 ** 6,
           "device": "cpu"}
    results = train_pack(cfg, ["competitive_paper"], seeds=[0, 1], results_dir="runs")
    assert [r.status for r in results] == ["COMPLETED", "COMPLETED"]
    for r in results:
        metrics = _metrics(r.run_dir)
        assert {"predator/critic_loss", "prey/critic_loss", "predator/test_capture_rate_mean"} <= set(metrics)
        state = torch.load(r.run_dir / "checkpoint.pt", weights_only=False)
        assert set(state["learners"]) == {"predator", "prey"}
        assert state["learners"]["predator"]["actor"]["fc1.weight"].dim() == 2  # one seed's weights, unstacked


def test_a_seed_of_a_pack_resumes_alone_from_the_packs_checkpoint(workdir):
    """Checkpoints are the same format packed or not: one seed of a stopped pack continues as a run alone."""
    stop = threading.Event()
    stop.set()
    part = train_pack({**PACK, "algo": "qmix"}, seeds=[0, 1], results_dir="runs", stop_event=stop)
    assert [r.status for r in part] == ["INTERRUPTED", "INTERRUPTED"]
    alone = train({**PACK, "algo": "qmix", "seed": 1}, results_dir="runs", resume_from=str(part[1].run_dir))
    assert alone.status == "COMPLETED" and alone.run_key == part[1].run_key


def test_the_cli_trains_a_pack_and_a_ctrl_c_prints_the_resume_command(workdir):
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import asae_cli

    args = ["train", "with", "algo=coma", "seeds=[0,1]", "t_max=3000", "n_envs=4", "batch_size=4",
            "test_interval=1000", "test_episodes=2", "env.episode_limit=25"]
    proc = subprocess.Popen(asae_cli() + args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:  # until the pack trains: seed 1's first test line (t_env 0)
        line = proc.stderr.readline()
        lines.append(line)
        if "seed=1" in line and "t_env" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == 2, out
    assert "seed 0: INTERRUPTED" in out and "seed 1: INTERRUPTED" in out
    import shlex

    command = shlex.split(out.split("to continue it: ")[-1].splitlines()[0])  # the whole command, as printed
    assert command[:2] == ["asae", "train"] and command[2:-1] == args[1:]
    resume = command[-1].split("resume_from=")[1]
    assert resume.startswith("[") and resume.count("results/runs/") == 2
    again = subprocess.run(asae_cli() + command[1:], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    for run_dir in resume[1:-1].split(","):
        run = json.loads((workdir / run_dir / "run.json").read_text())
        assert run["status"] == "INTERRUPTED"  # the stopped runs stay as they were; new runs continue them
    dirs = [p.parent for p in (workdir / "results" / "runs").glob("*/run.json")]
    resumed = [d for d in dirs if json.loads((d / "run.json").read_text())["status"] == "COMPLETED"]
    assert len(resumed) == 2
    assert all(json.loads((d / "info.json").read_text()).get("resumed_from") for d in resumed)


def test_each_seed_of_a_pack_gets_its_own_mongodb_copy(workdir):
    """MongoDB stands in as mongomock (no MongoDB server can be installed here), as in test_mongo_faults."""
    mongomock = pytest.importorskip("mongomock")
    import mongomock.gridfs
    import pymongo

    mongomock.gridfs.enable_gridfs_integration()
    url = "mongodb://localhost:27017/asae"
    with mongomock.patch(servers=(("localhost", 27017),), on_new="pymongo"):
        results = train_pack({**PACK, "algo": "asae", "t_max": 600}, seeds=[0, 1], results_dir="runs", mongo_url=url)
        db = pymongo.MongoClient(url)["asae"]
        docs = {d["config"]["seed"]: d for d in db["runs"].find()}
        assert set(docs) == {0, 1}
        for seed, result in zip([0, 1], results):
            info = json.loads((result.run_dir / "info.json").read_text())
            assert info["mongo"]["copy"] == "complete" and info["mongo"]["id"] == docs[seed]["_id"]
            assert docs[seed]["status"] == "COMPLETED" and docs[seed]["info"]["pack"]["seeds"] == [0, 1]
            files = json.loads((result.run_dir / "metrics.json").read_text())
            stored = {m["name"]: m["values"] for m in db["metrics"].find({"run_id": docs[seed]["_id"]})}
            assert stored == {k: v["values"] for k, v in files.items()}


@pytest.mark.parametrize("kind", ["rmsprop", "adam"])
def test_the_packed_optimizer_steps_each_seed_as_torchs_own_and_only_the_masked_ones(kind):
    from algos.packing import SeedOptimizer

    torch.manual_seed(0)
    n = 3
    alone = [torch.randn(4, 5, requires_grad=True) for _ in range(n)]
    opts = [torch.optim.Adam([w], lr=1e-3) if kind == "adam" else torch.optim.RMSprop([w], lr=1e-3, alpha=0.99, eps=1e-5)
            for w in alone]
    stacked = torch.stack([w.detach().clone() for w in alone]).requires_grad_()
    packed = SeedOptimizer([stacked], n, lr=1e-3, kind=kind, alpha=0.99, eps=1e-5)
    for _ in range(30):
        grad, mask = torch.randn(n, 4, 5), torch.rand(n) > 0.3
        for s in range(n):
            if mask[s]:  # a seed alone steps only when it has data
                alone[s].grad = grad[s].clone()
                opts[s].step()
        stacked.grad = grad * mask.float().reshape(n, 1, 1)
        packed.step(mask)
    for s in range(n):
        assert torch.allclose(stacked.detach()[s], alone[s].detach(), atol=1e-6, rtol=0)
        mine = unstack_tree(packed.state_dict()["state"], s)[0]
        theirs = opts[s].state_dict()["state"][0]
        assert set(mine) == set(theirs) and float(mine["step"]) == float(theirs["step"])


@pytest.mark.parametrize("seeds", [1, 3])
def test_the_critic_on_joint_samples_in_chunks_is_the_whole_forward_bit_for_bit(seeds, monkeypatch):
    """ASAE's m-sample critic forward runs in row chunks (SeedAxis.in_chunks); each chunk holds every
    seed's share, and the result is the one-call forward's exactly, on ragged chunk sizes too."""
    import algos.packing as packing
    from algos.critic import CentralQCritic
    from algos.packing import SeedAxis
    from envs.base import TeamSpec

    torch.manual_seed(0)
    spec = TeamSpec("agents", n_agents=3, obs_dim=7, state_dim=11, n_actions=5)
    critic = CentralQCritic(spec, hidden_dim=16, seeds=seeds)
    rows, m = 10, 4  # per seed
    base = torch.randn(seeds * rows, 3, 16)
    joint = torch.randint(0, 5, (seeds * rows, m, 3))
    axis = SeedAxis(seeds)
    with torch.no_grad():
        whole = critic(base, joint)
        calls = []
        counting = lambda b, j: calls.append(b.shape[0]) or critic(b, j)  # noqa: E731
        for per_seed in (1, 3, 4, 10):  # rows per seed in a chunk: 10 chunks, 4 (ragged), 3 (ragged), 1
            monkeypatch.setattr(packing, "CHUNK_ELEMENTS", per_seed * seeds * m * 3 * 16)
            calls.clear()
            chunked = axis.in_chunks(counting, base, joint, row_elements=m * 3 * 16)
            assert torch.equal(chunked, whole)
            assert len(calls) == -(-rows // per_seed) and calls[0] == min(per_seed, rows) * seeds
