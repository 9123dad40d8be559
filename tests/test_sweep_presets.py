"""Sweep presets: the shipped paper presets expand to the paper's grids; a typo is one line naming file and key."""
import pytest

from validation import ConfigError
from experiments import sweeps


def load(name):
    return sweeps.load_preset(sweeps.locate(name))


@pytest.mark.parametrize("name, configs, varying", [
    ("table1", 40, ["algo", "env.name", "env.map_name"]),
    ("spread", 15, ["env.n_agents", "algo"]),
    ("predator_prey", 5, ["algo"]),
    ("competitive", 6, ["env.n_predators", "env.n_prey", "algo", "teams.predator", "teams.prey"]),
    ("ablation_m", 5, ["learner.m"]),
    ("ablation_clip", 5, ["learner.clip"]),
    ("appendix", 9, ["env.map_name", "algo"]),
    ("repro_table1", 13, ["env.map_name", "algo"]),
    ("repro_spread", 4, ["env.n_agents", "algo"]),
    ("repro_ablation_m", 5, ["learner.m"]),
    ("repro_ablation_clip", 5, ["learner.clip"]),
])
def test_shipped_presets_expand_to_the_paper_grids(name, configs, varying):
    preset = load(name)
    assert preset.description
    specs = sweeps.expand(preset, seeds=[0, 1])
    assert len(specs) == 2 * configs
    assert sweeps.varying_keys(specs) == varying + ["seed"]
    assert sorted({s.config_updates["seed"] for s in specs}) == [0, 1]


def test_table1_runs_each_map_on_the_env_that_can_express_it():
    specs = sweeps.expand(load("table1"), seeds=[0])
    envs = {(s.config_updates["env"]["map_name"], s.config_updates["env"]["name"]) for s in specs}
    assert envs == {("3m", "smax"), ("8m", "smax"), ("3s5z", "smax"), ("2m_vs_1z", "smax"), ("3s_vs_3z", "smax"),
                    ("1c3s5z", "smac"), ("2c_vs_64zg", "smac"), ("MMM2", "smac")}
    assert {s.config_updates["algo"] for s in specs} == {"asae", "coma", "iql", "vdn", "qmix"}
    assert all(s.named_configs == ("smac_paper",) for s in specs)
    on_sc2 = sweeps.expand(load("table1"), seeds=[0], params={"env": "smac"})
    assert {s.config_updates["env"]["name"] for s in on_sc2} == {"smac"}


def test_parameters_substitute_with_their_type_and_lists_become_axes():
    specs = sweeps.expand(load("ablation_m"), seeds=[3], params={"map": "3m"})
    assert [s.config_updates["learner"]["m"] for s in specs] == [1, 2, 5, 10, 20]
    assert {s.config_updates["env"]["map_name"] for s in specs} == {"3m"}
    assert specs[0].config_updates["seed"] == 3
    specs = sweeps.expand(load("appendix"), seeds=[0], params={"maps": "3m,8m"})
    assert sorted({s.config_updates["env"]["map_name"] for s in specs}) == ["3m", "8m"]
    spread = sweeps.expand(load("spread"), seeds=[0], params={"sight_range": 0.5})
    assert {s.config_updates["env"]["sight_range"] for s in spread} == {0.5}


def test_reproduction_presets_are_exactly_what_was_run_here():
    """Issue 15's runs: Table 1 on SMAX at 500k env steps, Fig. 5 at the paper's MPE budget, Figs. 9 and 11
    on 3m; 3 seeds each, written to results/reproduction, every run tagged with its preset."""
    table1 = sweeps.expand(load("repro_table1"))
    pairs = sorted({(s.config_updates["env"]["map_name"], s.config_updates["algo"]) for s in table1})
    assert pairs == sorted([(m, a) for m in ("3m", "2m_vs_1z", "3s_vs_3z") for a in ("asae", "coma", "qmix")]
                           + [(m, a) for m in ("8m", "3s5z") for a in ("asae", "coma")])
    assert len(table1) == 39 and {s.config_updates["seed"] for s in table1} == {0, 1, 2}
    assert {(s.config_updates["env"]["name"], s.config_updates["t_max"], s.named_configs) for s in table1} == {
        ("smax", 500_000, ("smac_paper",))}
    spread = sweeps.expand(load("repro_spread"))
    assert sorted({(s.config_updates["env"]["n_agents"], s.config_updates["algo"]) for s in spread}) == [
        (3, "asae"), (3, "coma"), (5, "asae"), (5, "coma")]
    assert len(spread) == 12 and all(s.named_configs == ("mpe_paper",) for s in spread)
    for name, key, values in (("repro_ablation_m", "m", [1, 2, 5, 10, 20]),
                              ("repro_ablation_clip", "clip", [0.05, 0.1, 0.2, 0.3, 0.5])):
        specs = sweeps.expand(load(name))
        assert len(specs) == 15 and sorted({s.config_updates["learner"][key] for s in specs}) == values
        assert {(s.config_updates["env"]["map_name"], s.config_updates["t_max"]) for s in specs} == {("3m", 500_000)}
    for name in ("repro_table1", "repro_spread", "repro_ablation_m", "repro_ablation_clip"):
        assert load(name).results == "results/reproduction"
        assert {tuple(s.config_updates["tags"]) for s in sweeps.expand(load(name))} == {(f"preset:{name}",)}


def test_the_reproduction_budget_is_part_of_the_run_keys_and_shared_runs_run_once():
    def keys(name, **params):
        preset = load(name)
        return {c["run_key"]: c for c in sweeps.resolve(preset, sweeps.expand(preset, seeds=[0], params=params))}

    table1, ablation_m, ablation_clip = keys("repro_table1"), keys("repro_ablation_m"), keys("repro_ablation_clip")
    [shared] = set(table1) & set(ablation_m)  # ASAE on 3m with m = 10 and clip 0.1: one run for three presets
    assert set(ablation_m) & set(ablation_clip) == {shared}
    assert (table1[shared]["algo"], table1[shared]["learner"]["m"], table1[shared]["learner"]["clip"]) == ("asae", 10, 0.1)
    longer = keys("repro_ablation_m", t_max=3_000_000)
    assert not set(longer) & set(ablation_m) and {c["t_max"] for c in longer.values()} == {3_000_000}


def test_a_run_may_bring_its_own_grid(tmp_path):
    preset = sweeps.load_preset(write(tmp_path, GOOD + '[[runs]]\ngrid = { algo = ["coma", "iql"] }\n'
                                          '[[runs]]\nalgo = "qmix"\n'))
    specs = sweeps.expand(preset, seeds=[0])
    assert [(s.config_updates["algo"], s.config_updates["env"]["n_agents"]) for s in specs] == [
        ("coma", 2), ("iql", 2), ("coma", 3), ("iql", 3), ("qmix", 2), ("qmix", 3)]


def test_competitive_pits_asae_against_coma_both_ways():
    specs = sweeps.expand(load("competitive"), seeds=[0])
    pairs = {(s.config_updates["teams"]["predator"], s.config_updates["teams"]["prey"],
              s.config_updates["env"]["n_predators"], s.config_updates["env"]["n_prey"]) for s in specs}
    assert pairs == {(a, b, n, n) for a, b in (("asae", "coma"), ("coma", "asae")) for n in (2, 3, 4)}


def test_config_overrides_apply_to_every_run_and_nest():
    specs = sweeps.expand(load("ablation_clip"), seeds=[0], overrides={"t_max": 1000, "env.episode_limit": 20})
    assert all(s.config_updates["t_max"] == 1000 for s in specs)
    assert all(s.config_updates["env"] == {"name": "smax", "map_name": "3s5z", "episode_limit": 20} for s in specs)
    with pytest.raises(ConfigError, match="--seeds"):
        sweeps.expand(load("ablation_clip"), overrides={"seed": 3})


@pytest.mark.parametrize("text, seeds", [("3", [0, 1, 2]), ("2-4", [2, 3, 4]), ("0,5,7", [0, 5, 7])])
def test_parse_seeds(text, seeds):
    assert sweeps.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "x", "4-2", "1,1", "-3"])
def test_bad_seeds_are_one_line(text):
    with pytest.raises(ConfigError, match="--seeds"):
        sweeps.parse_seeds(text)


def test_values_parse_as_toml_literals_else_strings():
    assert sweeps.parse_assignment("map=3m", "--set") == ("map", "3m")
    assert sweeps.parse_assignment("learner.m=5", "--config") == ("learner.m", 5)
    assert sweeps.parse_assignment("x=[1, 2]", "--set") == ("x", [1, 2])
    assert sweeps.parse_assignment("ok=true", "--set") == ("ok", True)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        sweeps.parse_assignment("map", "--set")


def write(tmp_path, text, name="mine.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """
description = "mine"
seeds = 2
[config]
algo = "coma"
env = { name = "mpe_spread" }
[grid]
"env.n_agents" = [2, 3]
"""


@pytest.mark.parametrize("text, must_name", [
    ("sedes = 3\n" + GOOD, ["sedes", "valid keys"]),
    (GOOD.replace("seeds = 2", "seeds = 0"), ["seeds"]),
    (GOOD.replace("seeds = 2", 'seeds = "two"'), ["seeds"]),
    (GOOD.replace('[2, 3]', '3'), ["grid.env.n_agents", "list"]),
    (GOOD.replace('"coma"', '"qmx"'), ["config.algo", "qmx", "valid algos"]),
    (GOOD.replace('"mpe_spread"', '"${envname}"'), ["config.env.name", "${envname}"]),
    (GOOD.replace("[config]", "[config\n"), ["not valid TOML"]),
    (GOOD + "[[runs]]\nteams = { predator = 'asea' }\n", ["runs[0].teams.predator", "asea"]),
    (GOOD + "[[runs]]\ngrid = { algo = ['qmx'] }\n", ["runs[0].grid.algo", "qmx"]),
    (GOOD + "[[runs]]\ngrid = { algo = 'coma' }\n", ["runs[0].grid.algo", "list"]),
    (GOOD + "[[runs]]\ngrid = ['coma']\n", ["runs[0].grid", "table"]),
    ('results = 3\n' + GOOD, ["results", "directory"]),
])
def test_a_typo_in_a_preset_file_is_one_line_naming_file_and_key(tmp_path, text, must_name):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        preset = sweeps.load_preset(path)
        sweeps.check_algos(preset)
        sweeps.expand(preset)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for word in must_name:
        assert word in message, message


def test_unknown_preset_and_parameter_list_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'tabel1'.*table1"):
        sweeps.locate("tabel1")
    with pytest.raises(ConfigError, match="no parameter 'mapp'.*map"):
        sweeps.expand(load("ablation_m"), params={"mapp": "3m"})


def test_user_presets_come_from_files_and_directories(tmp_path):
    write(tmp_path, GOOD, "alpha.toml")
    found = sweeps.find_presets(dirs=[tmp_path])
    assert found["alpha"] == tmp_path / "alpha.toml" and "table1" in found
    other = write(tmp_path / "..", GOOD, "beta.toml")
    assert sweeps.locate("beta", files=[other]) == other
    assert sweeps.locate(str(other)) == other
    with pytest.raises(ConfigError, match="no such file"):
        sweeps.find_presets(files=[tmp_path / "missing.toml"])


def test_resolve_validates_every_run_and_names_the_failing_one(tmp_path):
    preset = sweeps.load_preset(write(tmp_path, GOOD.replace('"env.n_agents" = [2, 3]', '"env.n_agents" = [2, 30]')))
    with pytest.raises(ConfigError) as err:
        sweeps.resolve(preset, sweeps.expand(preset))
    message = str(err.value)
    assert "\n" not in message and "mine.toml" in message and "env.n_agents=30" in message
    ok = sweeps.load_preset(write(tmp_path, GOOD))
    configs = sweeps.resolve(ok, sweeps.expand(ok))
    assert len({c["run_key"] for c in configs}) == 4
