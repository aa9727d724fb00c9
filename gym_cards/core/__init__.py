"""Building blocks shared by the environments: cards, rendering, formulas, the solver."""
