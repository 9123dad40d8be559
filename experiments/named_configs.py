"""The paper's settings as Sacred named configs (`asae train with NAME`), registered on the experiment.

Named configs hold values only; `asae list` prints their docstrings.
"""
from experiments.experiment import ex


@ex.named_config
def mpe_paper():
    """The paper's MPE settings (sec. 5.2): 4 parallel envs, episodes of 150 steps, gamma 0.98,
    lr 5e-5 (actor) / 5e-4 (critic), 1.6k iterations = 1600 x 4 x 150 env steps."""
    env = {"episode_limit": 150}
    n_envs = 4
    batch_size = 4
    gamma = 0.98
    lr = 5e-5
    critic_lr = 5e-4
    t_max = 960_000
    test_interval = 24_000
    log_interval = 6_000
    checkpoint_interval = 60_000


@ex.named_config
def smac_paper():
    """The paper's SMAC settings (sec. 5.1): 3M steps, batch 32 episodes, gamma 0.99, lr 1e-3 for actor
    and critic (ASAE's m = 10 and clip 0.1 are its defaults)."""
    t_max = 3_000_000
    batch_size = 32
    n_envs = 32
    gamma = 0.99
    lr = 1e-3
    critic_lr = 1e-3
    test_interval = 50_000
    test_episodes = 100
    log_interval = 10_000
    checkpoint_interval = 100_000
