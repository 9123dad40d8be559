"""SMAC map facts shared by the SMAX and real-SMAC backends (no heavy imports).

The table lists every map of oxwhirl's SMAC with its unit composition and episode limit (from SMAC's
``smac_maps.py``), which is what decides whether SMAX (JaxMARL) can express it. SMAX has six unit
types (marine, marauder, stalker, zealot, zergling, hydralisk), no terrain (an open 32 x 32 field),
no shields and no healing. A map whose units SMAX lacks is refused, never silently replaced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# SMAX's unit type ids are the positions in this tuple (jaxmarl's SMAX `unit_type_names`).
SMAX_UNIT_TYPES = ("marine", "marauder", "stalker", "zealot", "zergling", "hydralisk")

Units = tuple[tuple[str, int], ...]  # (unit type, count), in SMAC's ally order (sorted by unit type)


@dataclass(frozen=True)
class SmacMap:
    allies: Units
    enemies: Units
    episode_limit: int
    # Why SMAX cannot run this map although it has the unit types (terrain is the task).
    terrain_note: Optional[str] = None

    @property
    def n_allies(self) -> int:
        return sum(n for _, n in self.allies)

    @property
    def n_enemies(self) -> int:
        return sum(n for _, n in self.enemies)

    def unit_list(self) -> list[str]:
        """One unit type per unit: allies first, then enemies (SMAX's layout)."""
        return [u for u, n in self.allies + self.enemies for _ in range(n)]


def _same(units: Units, limit: int) -> SmacMap:
    return SmacMap(units, units, limit)


SMAC_MAPS: dict[str, SmacMap] = {
    "3m": _same((("marine", 3),), 60),
    "8m": _same((("marine", 8),), 120),
    "25m": _same((("marine", 25),), 150),
    "5m_vs_6m": SmacMap((("marine", 5),), (("marine", 6),), 70),
    "8m_vs_9m": SmacMap((("marine", 8),), (("marine", 9),), 120),
    "10m_vs_11m": SmacMap((("marine", 10),), (("marine", 11),), 150),
    "27m_vs_30m": SmacMap((("marine", 27),), (("marine", 30),), 180),
    "MMM": _same((("marauder", 2), ("marine", 7), ("medivac", 1)), 150),
    "MMM2": SmacMap((("marauder", 2), ("marine", 7), ("medivac", 1)),
                    (("marauder", 3), ("marine", 8), ("medivac", 1)), 180),
    "2s3z": _same((("stalker", 2), ("zealot", 3)), 120),
    "3s5z": _same((("stalker", 3), ("zealot", 5)), 150),
    "3s5z_vs_3s6z": SmacMap((("stalker", 3), ("zealot", 5)), (("stalker", 3), ("zealot", 6)), 170),
    "1c3s5z": _same((("colossus", 1), ("stalker", 3), ("zealot", 5)), 180),
    "3s_vs_3z": SmacMap((("stalker", 3),), (("zealot", 3),), 150),
    "3s_vs_4z": SmacMap((("stalker", 3),), (("zealot", 4),), 200),
    "3s_vs_5z": SmacMap((("stalker", 3),), (("zealot", 5),), 250),
    "2m_vs_1z": SmacMap((("marine", 2),), (("zealot", 1),), 150),
    "6h_vs_8z": SmacMap((("hydralisk", 6),), (("zealot", 8),), 150),
    "2s_vs_1sc": SmacMap((("stalker", 2),), (("spine crawler", 1),), 300),
    "so_many_baneling": SmacMap((("zealot", 7),), (("baneling", 32),), 100),
    "bane_vs_bane": _same((("zergling", 20), ("baneling", 4)), 200),
    "corridor": SmacMap((("zealot", 6),), (("zergling", 24),), 400,
                        terrain_note="its narrow corridor is the task and SMAX has no terrain"),
    "2c_vs_64zg": SmacMap((("colossus", 2),), (("zergling", 64),), 400),
}

# Maps jaxmarl 0.2.0 ships that are not SMAC maps (random SMACv2-style units and positions).
# SMAC has no episode limit for them: SMAX's own default (100 steps) is used.
SMAX_ONLY_MAPS: dict[str, int] = {"smacv2_5_units": 100, "smacv2_10_units": 100, "smacv2_20_units": 100}

# Maps jaxmarl 0.2.0 registers itself (`jaxmarl.environments.smax.map_name_to_scenario`); the other
# SMAX-expressible SMAC maps are built here from the table above.
SMAX_SHIPPED_MAPS = frozenset({
    "3m", "2s3z", "25m", "3s5z", "8m", "5m_vs_6m", "10m_vs_11m", "27m_vs_30m", "3s5z_vs_3s6z",
    "3s_vs_5z", "6h_vs_8z", *SMAX_ONLY_MAPS,
})

# The maps the paper (Wan et al., table 1) evaluates on.
PAPER_MAPS = ("3m", "8m", "3s5z", "1c3s5z", "2m_vs_1z", "3s_vs_3z", "2c_vs_64zg", "MMM2")


def missing_smax_units(name: str) -> list[str]:
    """Unit types of SMAC map ``name`` that SMAX lacks, in order of first appearance."""
    units = SMAC_MAPS[name].unit_list()
    return [u for u in dict.fromkeys(units) if u not in SMAX_UNIT_TYPES]


def smax_refusal(name: str) -> Optional[str]:
    """Why SMAX cannot run SMAC map ``name`` (one line), or None when it can."""
    if name in SMAX_ONLY_MAPS:
        return None
    spec = SMAC_MAPS[name]
    missing = missing_smax_units(name)
    if missing:
        why = f"needs unit types SMAX lacks ({', '.join(missing)})"
    elif spec.terrain_note:
        why = f"cannot be expressed in SMAX: {spec.terrain_note}"
    else:
        return None
    return (f"env.map_name={name!r} {why}; run it on real StarCraft II with env=smac "
            f"(needs the oxwhirl smac package, StarCraft II and the SMAC maps; see docs/smac.md)")


def smax_map_names() -> list[str]:
    """Every map name env=smax accepts."""
    names = [n for n in SMAC_MAPS if smax_refusal(n) is None] + list(SMAX_ONLY_MAPS)
    return sorted(names)


def smax_episode_limit(name: str) -> int:
    return SMAX_ONLY_MAPS[name] if name in SMAX_ONLY_MAPS else SMAC_MAPS[name].episode_limit


def smax_unit_type_ids(name: str) -> list[int]:
    """SMAX unit type ids of a SMAC map's units (allies then enemies), for a jaxmarl ``Scenario``."""
    return [SMAX_UNIT_TYPES.index(u) for u in SMAC_MAPS[name].unit_list()]

