"""Building blocks shared by the environments: cards, rendering, formulas, the solver, the formula
game that EZPoints and Points24 extend, the base of the visual envs and the checks of their inputs."""
