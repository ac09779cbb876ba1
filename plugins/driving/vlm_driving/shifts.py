"""The named shifts of `vlm eval driving.detect --shift` and their seed ranges (light: no
numpy, so the plugin's entry module can declare them).

Each shift is drawn by the scene generator's own controls (:mod:`vlm_driving.scenes`): its
lighting (``Look.time``), weather (``Look.weather``, fog visibility) and crowd (how many
objects of each class, how far away). The lighting and weather shifts change only how the
scene of a seed looks: its street and objects are those of the unshifted scene of the same
seed, so their rows differ by the shift alone.
"""

from __future__ import annotations

#: How much denser and farther the ``dense`` crowd is than the training crowd
#: (:data:`vlm_driving.scenes.CROWD`): twice the objects of every class, each 1.5 times
#: farther away (smaller, and more of them partly hidden behind nearer ones).
DENSE_COUNT, DENSE_DISTANCE = 2, 1.5

#: Named departures from the training distribution, in the order `--shift all` measures them.
SHIFTS: dict[str, str] = {
    "none": "the training distribution (held-out seeds)",
    "night": "every scene at night (training: one scene in five)",
    "fog": "every scene in fog, visibility 60-160 m as in training (training: one in five)",
    "rain": "every scene in rain: darker, with streaks (training: one in five)",
    "dense": f"{DENSE_COUNT}x the objects of every class, {DENSE_DISTANCE:g}x farther away: "
    "small, far and partly hidden objects",
}

#: The first held-out seed of the shifted scenes (acceptance figures: 7,400,000..). Seeds
#: 7,410,000.. are for choosing anything on shifted validation scenes, 7,420,000.. for tests.
#: The bundled detector's training scenes are 0..2999, its other held-out and calibration
#: scenes below 1,000,000; the LiDAR scenes use 8,100,000..8,499,999.
EVAL_SEED = 7_400_000
VALIDATION_SEED = 7_410_000
TEST_SEED = 7_420_000
