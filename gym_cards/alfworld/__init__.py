"""ALFWorld household tasks as a visual Gymnasium environment (``gym_cards/ALFWorld-v0``).

Importing this package is light: alfworld and textworld are imported only when an environment
is built or games are generated (optional extra: ``pip install 'gym-cards-vlm[alfworld]'``).

- :mod:`gym_cards.alfworld.env`: ``ALFWorldEnv`` (the Gymnasium environment).
- :mod:`gym_cards.alfworld.generate`: writes expert-checked games from alfworld's floor plans
  (``gym-cards alfworld-generate``).
- :mod:`gym_cards.alfworld.render`: the offline picture of a world state.
- :mod:`gym_cards.alfworld.tasks`: task types, goal conditions and the reward.
- :mod:`gym_cards.alfworld.engine`: the bridge to alfworld's text engine and hand-coded expert.
- ``pack/``: the generated games shipped with the package.
"""
