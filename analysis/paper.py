"""The paper's reference numbers and claims, kept as data in results/paper/ (see results/README.md)."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from validation import ConfigError

PAPER_DIR = Path(__file__).resolve().parents[1] / "results" / "paper"
WIN_RATE = "test_battle_won_mean"


@dataclass(frozen=True)
class Paper:
    table1: pd.DataFrame  # map, algo, win_rate
    maps: pd.DataFrame  # map, smax (yes/no), note
    algorithms: pd.DataFrame  # algo, label, paper_label
    claims: list[dict]
    captions: list[dict]  # results stated only as figure captions: nothing a run can check
    settings: pd.DataFrame  # algo, param, value: the paper's hyper-parameters (ASAE: m = 10, clip = 0.1)

    @property
    def map_order(self) -> list[str]:
        return list(dict.fromkeys(self.table1["map"]))

    @property
    def algo_order(self) -> list[str]:
        return list(dict.fromkeys(self.table1["algo"]))

    def label(self, algo: str) -> str:
        row = self.algorithms[self.algorithms["algo"] == algo]
        return str(row["label"].iloc[0]) if len(row) else str(algo).upper()

    def map_note(self, map_name: str) -> str:
        row = self.maps[self.maps["map"] == map_name]
        return str(row["note"].iloc[0]) if len(row) and isinstance(row["note"].iloc[0], str) else ""

    def scripted_wins(self, map_name: str) -> bool:
        """maps.csv `scripted_wins`: on SMAX a scripted policy wins this map (results/baselines measures it)."""
        if "scripted_wins" not in self.maps:
            return False
        row = self.maps[self.maps["map"] == map_name]
        return bool(len(row)) and str(row["scripted_wins"].iloc[0]).lower() == "yes"

    def smax_can_run(self, map_name: str) -> bool:
        row = self.maps[self.maps["map"] == map_name]
        return not len(row) or str(row["smax"].iloc[0]).lower() == "yes"

    def paper_settings(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of runs that use the paper's hyper-parameters (settings.csv), i.e. not ablation variants.

        Rows of other algorithms, and runs that record none of an algorithm's settings (older or foreign
        runs), are kept. A run that records some of them must match all; one that records `m` but no
        `clip` ran without clipping (the suite always writes learner defaults into the config).
        """
        keep = np.ones(len(frame), dtype=bool)
        for algo, group in self.settings.groupby("algo"):
            # The run's own learner config is `algo`'s (a team override of another run is not recorded).
            rows = (frame["algo"] == algo).to_numpy() & (frame["team_algo"] == algo).to_numpy()
            recorded = np.zeros(len(frame), dtype=bool)
            match = np.ones(len(frame), dtype=bool)
            for param, value in zip(group["param"], group["value"]):
                column = pd.to_numeric(frame[param].astype(object), errors="coerce").to_numpy(dtype=float)
                recorded |= ~np.isnan(column)
                match &= np.isclose(column, float(value))
            keep &= ~rows | ~recorded | match
        return frame[keep]

    def win_rate(self, map_name: str, algo: str) -> float | None:
        row = self.table1[(self.table1["map"] == map_name) & (self.table1["algo"] == algo)]
        return float(row["win_rate"].iloc[0]) if len(row) else None


def load_paper(directory: str | Path | None = None) -> Paper:
    directory = Path(directory) if directory else PAPER_DIR
    try:
        table1 = pd.read_csv(directory / "table1.csv")
        maps = pd.read_csv(directory / "maps.csv")
        algorithms = pd.read_csv(directory / "algorithms.csv")
        settings = pd.read_csv(directory / "settings.csv")
        with open(directory / "claims.toml", "rb") as f:
            data = tomllib.load(f)
        claims, captions = data.get("claim", []), data.get("caption", [])
    except FileNotFoundError as exc:
        raise ConfigError(f"paper reference data missing: {exc.filename} (expected in {directory})") from None
    except (tomllib.TOMLDecodeError, pd.errors.ParserError) as exc:
        raise ConfigError(f"paper reference data in {directory} is malformed: {exc}") from None
    for col in ("map", "algo", "win_rate"):
        if col not in table1.columns:
            raise ConfigError(f"{directory / 'table1.csv'} needs columns map, algo, win_rate")
    return Paper(table1=table1, maps=maps, algorithms=algorithms, claims=claims, settings=settings, captions=captions)
