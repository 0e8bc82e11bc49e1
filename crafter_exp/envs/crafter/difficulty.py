"""Difficulty presets: `normal` is stock Crafter exactly; `easy` and `hard` change only the game's balance.

Worlds are the same at every difficulty (same seed, same map, same starting creatures); the presets change how
fast the vitals drain, how health recovers, how hard creatures hit and how many hostile creatures spawn.

| parameter (stock name / place)                          | easy   | normal (stock) | hard   |
|---------------------------------------------------------|--------|----------------|--------|
| steps per food point lost (Player `_hunger > 25`)        | 40     | 25             | 18     |
| steps per drink point lost (Player `_thirst > 20`)       | 30     | 20             | 15     |
| steps per energy point lost awake (`_fatigue > 30`)      | 45     | 30             | 22     |
| health regen: recovery count per +1 health (`> 25`)      | 15     | 25             | 35     |
| health loss when starving/thirsty/exhausted (`< -15`)    | -25    | -15            | -10    |
| zombie damage, player awake / asleep                     | 1 / 4  | 2 / 7          | 3 / 9  |
| zombie attack cooldown (steps)                           | 7      | 5              | 4      |
| arrow damage                                             | 1      | 2              | 3      |
| zombie spawn target per chunk (x stock's count)          | x0.5   | x1             | x1.5   |
| skeleton spawn target per chunk (x stock's count)        | x0.5   | x1             | x1.5   |
| zombie spawn probability per balance check               | 0.15   | 0.3            | 0.45   |

(Sleeping halves hunger/thirst growth and doubles recovery, as in stock, at every difficulty. Stock zombie spawn
target per 12x12 chunk: 0 when the chunk has < 50 grass cells, else 3.5 - 3 x daylight; skeletons: 0 with < 6
path cells, else 1 (despawn above 2).)
"""

from __future__ import annotations

from dataclasses import dataclass

from crafter_exp.envs.crafter import creatures


@dataclass(frozen=True)
class Balance:
    """The numbers a difficulty preset sets (stock values are the `normal` defaults)."""

    hunger_steps: float = 25
    thirst_steps: float = 20
    fatigue_steps: float = 30
    regen_steps: float = 25
    degen_steps: float = -15
    zombie_damage: int = 2
    zombie_sleep_damage: int = 7
    zombie_cooldown: int = 5
    arrow_damage: int = 2
    zombie_density: float = 1.0
    skeleton_density: float = 1.0
    zombie_spawn_prob: float = 0.3


PRESETS: dict[str, Balance] = {
    "easy": Balance(
        hunger_steps=40,
        thirst_steps=30,
        fatigue_steps=45,
        regen_steps=15,
        degen_steps=-25,
        zombie_damage=1,
        zombie_sleep_damage=4,
        zombie_cooldown=7,
        arrow_damage=1,
        zombie_density=0.5,
        skeleton_density=0.5,
        zombie_spawn_prob=0.15,
    ),
    "normal": Balance(),
    "hard": Balance(
        hunger_steps=18,
        thirst_steps=15,
        fatigue_steps=22,
        regen_steps=35,
        degen_steps=-10,
        zombie_damage=3,
        zombie_sleep_damage=9,
        zombie_cooldown=4,
        arrow_damage=3,
        zombie_density=1.5,
        skeleton_density=1.5,
        zombie_spawn_prob=0.45,
    ),
}
DIFFICULTIES = tuple(PRESETS)


# The subclasses below are used only for easy/hard (`normal` plays `creatures.*`: crafter's classes with faster
# geometry). Each overrides only the method holding the numbers, mirroring stock's code line by line.


class BalancedPlayer(creatures.Player):
    balance: Balance = Balance()

    def _update_life_stats(self):
        b = self.balance
        self._hunger += 0.5 if self.sleeping else 1
        if self._hunger > b.hunger_steps:
            self._hunger = 0
            self.inventory["food"] -= 1
        self._thirst += 0.5 if self.sleeping else 1
        if self._thirst > b.thirst_steps:
            self._thirst = 0
            self.inventory["drink"] -= 1
        if self.sleeping:
            self._fatigue = min(self._fatigue - 1, 0)
        else:
            self._fatigue += 1
        if self._fatigue < -10:
            self._fatigue = 0
            self.inventory["energy"] += 1
        if self._fatigue > b.fatigue_steps:
            self._fatigue = 0
            self.inventory["energy"] -= 1

    def _degen_or_regen_health(self):
        necessities = (
            self.inventory["food"] > 0,
            self.inventory["drink"] > 0,
            self.inventory["energy"] > 0 or self.sleeping,
        )
        if all(necessities):
            self._recover += 2 if self.sleeping else 1
        else:
            self._recover -= 0.5 if self.sleeping else 1
        if self._recover > self.balance.regen_steps:
            self._recover = 0
            self.health += 1
        if self._recover < self.balance.degen_steps:
            self._recover = 0
            self.health -= 1


class BalancedZombie(creatures.Zombie):
    balance: Balance = Balance()

    def update(self):
        if self.health <= 0:
            self.world.remove(self)
        dist = self.distance(self.player)
        if dist <= 8 and self.random.uniform() < 0.9:
            self.move(self.toward(self.player, self.random.uniform() < 0.8))
        else:
            self.move(self.random_dir())
        dist = self.distance(self.player)
        if dist <= 1:
            if self.cooldown:
                self.cooldown -= 1
            else:
                if self.player.sleeping:
                    damage = self.balance.zombie_sleep_damage
                else:
                    damage = self.balance.zombie_damage
                self.player.health -= damage
                self.cooldown = self.balance.zombie_cooldown


class BalancedArrow(creatures.Arrow):
    balance: Balance = Balance()

    def update(self):
        target = self.pos + self.facing
        material, obj = self.world[target]
        if obj:
            obj.health -= self.balance.arrow_damage
            self.world.remove(self)
        elif material not in self.walkable:
            self.world.remove(self)
            if material in ["table", "furnace"]:
                self.world[target] = "path"
        else:
            self.move(self.facing)


class BalancedSkeleton(creatures.Skeleton):
    balance: Balance = Balance()
    arrow_cls: type = BalancedArrow


@dataclass(frozen=True)
class Kinds:
    """The creature classes a game spawns (`creatures.*`, crafter's own behaviour, for `normal`)."""

    player: type
    zombie: type
    skeleton: type
    cow: type = creatures.Cow


def _preset_kinds(difficulty: str) -> Kinds:
    # module-level classes (named e.g. Zombie_easy) so that game objects pickle like crafter's own
    balance = PRESETS[difficulty]

    def make(base: type, name: str, **attrs) -> type:
        cls = type(f"{name}_{difficulty}", (base,), {"balance": balance, "__module__": __name__, **attrs})
        globals()[cls.__name__] = cls
        return cls

    arrow = make(BalancedArrow, "Arrow")
    return Kinds(
        player=make(BalancedPlayer, "Player"),
        zombie=make(BalancedZombie, "Zombie"),
        skeleton=make(BalancedSkeleton, "Skeleton", arrow_cls=arrow),
    )


_KINDS = {"normal": Kinds(creatures.Player, creatures.Zombie, creatures.Skeleton)}
_KINDS.update({name: _preset_kinds(name) for name in PRESETS if name != "normal"})


def kinds_for(difficulty: str) -> Kinds:
    """The creature classes of a preset: `creatures.*` for `normal`, subclasses bound to the numbers otherwise."""
    return _KINDS[difficulty]
