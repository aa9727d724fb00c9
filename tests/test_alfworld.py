"""Tests of the ALFWorld adapter (gym_cards.alfworld) on the real alfworld/textworld engine."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

if importlib.util.find_spec("alfworld") is None:
    pytest.skip("needs the [alfworld] extra", allow_module_level=True)

import gymnasium as gym
from gymnasium.utils.env_checker import check_env

from gym_cards.alfworld import engine
from gym_cards.alfworld.env import (
    MAX_EPISODE_STEPS,
    PACK_DIR,
    ALFWorldEnv,
    collect_game_files,
)
from gym_cards.alfworld.generate import GameSpec, generate_games, write_game
from gym_cards.alfworld.generate import main as generate_main
from gym_cards.alfworld.render import (
    LAMP_GLOW,
    STATE_BADGES,
    WorldView,
    holding_top,
    panel_top,
    receptacle_boxes,
    render_world,
    world_view_from_facts,
)
from gym_cards.alfworld.scenes import load_scene
from gym_cards.alfworld.tasks import (
    TASK_TYPES,
    alfworld_reward,
    goal_conditions_met,
    resolve_task_types,
)

# alfworld makes the folder named by ALFWORLD_DATA when imported; importing it through the engine
# points that at a scratch folder unless the user set it, so ~/.cache stays clean.
engine.import_alfworld()

ENV_ID = "gym_cards/ALFWorld-v0"
if ENV_ID not in gym.registry:  # gym_cards/__init__ registers it; keep the tests independent of that
    gym.register(ENV_ID, entry_point="gym_cards.alfworld.env:ALFWorldEnv", max_episode_steps=MAX_EPISODE_STEPS)


# ----------------------------------------------------------------------------- fixed game
def _fixed_game(folder: str) -> str:
    """A heat task in FloorPlan1: apple 1 in the (closed) fridge, a mug as distractor."""
    scene = load_scene(1)
    fridge = next(r.alfred_id for r in scene.receptacles if r.type_name == "Fridge")
    counter = next(r.alfred_id for r in scene.receptacles if r.type_name == "CounterTop")
    spec = GameSpec(
        scene=1,
        task_type="pick_heat_then_place_in_recep",
        object_target="Apple",
        parent_target="CounterTop",
        toggle_target="",
        task_sentence="put a hot apple in countertop",
        placements=[("Apple|1", "Apple", fridge), ("Mug|1", "Mug", counter)],
    )
    task_id = "pick_heat_then_place_in_recep-Apple-None-CounterTop-1/trial_fixed"
    return write_game(spec, os.path.join(folder, "json_2.1.1", "train", task_id), task_id)


@pytest.fixture(scope="module")
def fixed_game(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _fixed_game(str(tmp_path_factory.mktemp("alfworld_fixed")))


@pytest.fixture(scope="module")
def fixed_env(fixed_game: str) -> ALFWorldEnv:
    env = ALFWorldEnv(data_path=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(fixed_game)))))
    assert env.game_files == [fixed_game]
    return env


# ----------------------------------------------------------------------------- import hygiene
def test_import_is_light_and_alfworld_import_keeps_home_clean(tmp_path):
    code = (
        "import sys, os\n"
        "import gym_cards.alfworld, gym_cards.alfworld.env\n"
        "heavy = [m for m in ('alfworld', 'textworld', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from gym_cards.alfworld.engine import import_alfworld\n"
        "import_alfworld()\n"
        "assert not os.path.exists(os.path.expanduser('~/.cache/alfworld'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ALFWORLD_DATA"}
    env.update(HOME=str(tmp_path), PYTHONPATH=os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=os.getcwd())


# ----------------------------------------------------------------------------- gymnasium API
def test_check_env_through_gym_make():
    env = gym.make(ENV_ID, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_render_without_a_render_mode_warns_like_the_card_games():
    env = ALFWorldEnv()
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render\\(\\) was called without a render_mode; pass render_mode='rgb_array'"):
        assert env.render() is None
    card_game = gym.make("gym_cards/NumberLine-v0").unwrapped
    card_game.reset(seed=0)
    with pytest.warns(UserWarning, match="render\\(\\) was called without a render_mode"):
        assert card_game.render() is None
    env.close()


def test_same_seed_same_game_and_observations():
    first, second = ALFWorldEnv(render_mode="rgb_array"), ALFWorldEnv(render_mode="rgb_array")
    for env in (first, second):
        env.reset(seed=7)
    for _ in range(4):
        assert first.legal_actions() == second.legal_actions()
        action = first.expert_action()
        assert action == second.expert_action()
        obs_a, rew_a, term_a, _, info_a = first.step(action)
        obs_b, rew_b, term_b, _, info_b = second.step(action)
        assert np.array_equal(obs_a["image"], obs_b["image"])
        assert obs_a["text"] == obs_b["text"] and obs_a["admissible_commands"] == obs_b["admissible_commands"]
        assert (rew_a, term_a, info_a) == (rew_b, term_b, info_b)
        assert np.array_equal(first.render(), obs_a["image"])
        if term_a:
            break


# ----------------------------------------------------------------------------- scripted episode
def _step_text(env: ALFWorldEnv, command: str):
    return env.step(env.legal_actions().index(command))


def test_scripted_heat_episode(fixed_env: ALFWorldEnv):
    env = fixed_env
    obs, info = env.reset(seed=0)
    assert "You are in the middle of a room" in obs["text"]
    assert "Your task is to: put a hot apple in countertop." in obs["text"]
    assert obs["admissible_commands"].split("\n") == env.legal_actions() == info["admissible_commands"]
    assert "go to fridge 1" in env.legal_actions() and "go to microwave 1" in env.legal_actions()
    assert info["goal_condition_success_rate"] == 0.0 and not info["success"]
    image0 = obs["image"]

    obs, reward, terminated, truncated, info = env.step("Go to  fridge 1")  # text form, loosely written
    assert "You arrive at fridge 1. The fridge 1 is closed." in obs["text"]
    assert reward == 0.0 and not terminated and not truncated and info["admissible"]
    assert "open fridge 1" in env.legal_actions()
    assert not np.array_equal(obs["image"], image0)  # the agent marker moved

    before = env.legal_actions()
    image_before = obs["image"]
    for bad in (len(before) + 3, "fly to the moon"):
        obs, reward, terminated, _, info = env.step(bad)
        assert reward == -1.0 and not terminated and not info["admissible"]
        assert obs["text"].startswith("Nothing happens.")
        assert env.legal_actions() == before
        assert np.array_equal(obs["image"], image_before)

    obs, reward, *_ = _step_text(env, "open fridge 1")
    assert "In it, you see a apple 1." in obs["text"] and reward == 0.0
    obs, reward, *_ = _step_text(env, "take apple 1 from fridge 1")
    assert "You pick up the apple 1 from the fridge 1." in obs["text"]
    _step_text(env, "go to microwave 1")
    obs, reward, terminated, _, info = _step_text(env, "heat apple 1 with microwave 1")
    assert "You heat the apple 1 using the microwave 1." in obs["text"]
    assert info["goal_condition_success_rate"] == pytest.approx(1 / 3) and reward == pytest.approx(1 / 3)
    assert not terminated
    _step_text(env, "go to countertop 1")
    obs, reward, terminated, truncated, info = _step_text(env, "move apple 1 to countertop 1")
    assert terminated and not truncated
    assert info["won"] and info["success"] and info["goal_condition_success_rate"] == 1.0
    assert reward == 51.0


def test_cold_apple_on_counter_meets_one_of_three_conditions(fixed_env: ALFWorldEnv):
    env = fixed_env
    env.reset(seed=0)
    for command in ("go to fridge 1", "open fridge 1", "take apple 1 from fridge 1", "go to countertop 1"):
        _step_text(env, command)
    _, reward, terminated, _, info = _step_text(env, "move apple 1 to countertop 1")
    assert not terminated and not info["won"]
    assert info["goal_condition_success_rate"] == pytest.approx(1 / 3)
    assert reward == pytest.approx(1 / 3)


def test_expert_solves_fixed_game_and_takes_off_policy_detours(fixed_env: ALFWorldEnv):
    env = fixed_env
    env.reset(seed=3)
    _step_text(env, "go to toaster 1")  # a detour the expert did not choose
    for _ in range(MAX_EPISODE_STEPS):
        *_, terminated, _, info = env.step(env.expert_action())
        if terminated:
            break
    assert info["success"]


# ----------------------------------------------------------------------------- rendering
def test_image_changes_where_the_state_changed(fixed_env: ALFWorldEnv):
    env = fixed_env
    env.reset(seed=0)
    obs, *_ = _step_text(env, "go to fridge 1")
    view = world_view_from_facts(env._backend.facts)
    boxes = receptacle_boxes(view, env.image_size)
    size = env.image_size

    def changed_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.any(a != b, axis=-1)

    opened, *_ = _step_text(env, "open fridge 1")
    diff = changed_mask(obs["image"], opened["image"])
    x0, y0, x1, y1 = boxes["fridge 1"]
    assert diff[y0:y1 + 1, x0:x1 + 1].any()
    for name, (bx0, by0, bx1, by1) in boxes.items():  # no other receptacle's box changed
        if name != "fridge 1":
            assert not diff[by0 + 1:by1, bx0 + 1:bx1].any(), name
    assert diff[panel_top(size):holding_top(size)].any()  # the apple appears in the "here" panel
    assert not diff[holding_top(size):].any()  # still holding nothing

    taken, *_ = _step_text(env, "take apple 1 from fridge 1")
    diff = changed_mask(opened["image"], taken["image"])
    assert diff[holding_top(size):].any()  # the apple is in hand
    assert not diff[: panel_top(size)].any()  # the room map did not change

    _step_text(env, "go to microwave 1")
    before_heat = env.render() if env.render_mode else env._current_image().copy()
    heated, *_ = _step_text(env, "heat apple 1 with microwave 1")
    diff = changed_mask(before_heat, heated["image"])
    assert diff[holding_top(size):].any() and not diff[: holding_top(size)].any()  # a "hot" badge


def test_render_is_deterministic_and_sized(fixed_game: str):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(fixed_game))))
    images = []
    for _ in range(2):
        env = ALFWorldEnv(data_path=root, image_size=200, render_mode="rgb_array")
        obs, _ = env.reset(seed=1)
        images.append(obs["image"])
        assert obs["image"].shape == (200, 200, 3) and obs["image"].dtype == np.uint8
    assert np.array_equal(images[0], images[1])


def test_held_object_with_every_state_badge_draws_at_the_smallest_image_size():
    """At 64 px an object chip is 3 pixels high; its state badges once had their bottom above their top."""
    crowded = tuple(f"cabinet {i}" for i in range(1, 40))
    view = WorldView(
        receptacles=crowded, openable=frozenset(crowded[:5]), opened=frozenset(crowded[:2]),
        agent_at=(crowded[0],), contents={crowded[0]: ("mug 1", "apple 2")}, held=("apple 1",),
        states={"apple 1": tuple(predicate for predicate, _, _ in STATE_BADGES), "mug 1": ("iscool",)},
    )
    for size in (64, 65, 80):
        image = render_world(view, "put a hot apple in fridge", size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "eval"])
def test_every_shipped_game_renders_at_the_smallest_image_size(split: str):
    """image_size=64 is allowed; the most crowded shipped scene (train game 9) once drew a box
    whose bottom edge lay above its top edge, and PIL refused it."""
    env = gym.make("gym_cards/ALFWorld-v0", split=split, image_size=64).unwrapped
    for game in range(len(env.game_files)):
        obs, _ = env.reset(seed=0, options={"game": game})
        assert obs["image"].shape == (64, 64, 3)


def test_lamp_that_is_on_lights_its_receptacle():
    base = {("receptacletype", "desk 1", "desktype"), ("receptacletype", "bed 1", "bedtype"),
            ("inreceptacle", "desklamp 1", "desk 1"), ("objecttype", "desklamp 1", "desklamptype")}
    off = world_view_from_facts(frozenset(base))
    on = world_view_from_facts(frozenset(base | {("istoggled", "desklamp 1")}))
    glow = np.array(LAMP_GLOW, dtype=np.uint8)
    image_off, image_on = render_world(off, "look"), render_world(on, "look")
    assert not np.all(image_off == glow, axis=-1).any()
    x0, y0, x1, y1 = receptacle_boxes(on, 300)["desk 1"]
    around_desk = np.all(image_on[y0 - 3:y1 + 4, x0 - 3:x1 + 4] == glow, axis=-1)
    assert around_desk.any() and np.all(image_on == glow, axis=-1).sum() == around_desk.sum()


def test_official_layout_under_alfworld_data_is_preferred(fixed_game, monkeypatch, tmp_path):
    root = fixed_game.split(os.sep + "json_2.1.1" + os.sep)[0]
    monkeypatch.setenv("ALFWORLD_DATA", root)  # holds json_2.1.1/train, like the official release
    env = ALFWorldEnv()
    assert env.game_files == [fixed_game]
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))  # no json_2.1.1: the shipped pack
    assert ALFWorldEnv().games_root.startswith(PACK_DIR)


# ----------------------------------------------------------------------------- goal conditions
_TYPES = {("objecttype", "apple 1", "appletype"), ("objecttype", "apple 2", "appletype"),
          ("objecttype", "desklamp 1", "desklamptype"), ("receptacletype", "countertop 1", "countertoptype"),
          ("receptacletype", "desk 1", "desktype"), ("receptacleatlocation", "desk 1", "loc_2"),
          ("receptacleatlocation", "countertop 1", "loc_1"), ("inreceptacle", "desklamp 1", "desk 1")}


@pytest.mark.parametrize(
    ("task_type", "extra", "expected"),
    [
        ("pick_and_place_simple", set(), (0, 1)),
        ("pick_and_place_simple", {("inreceptacle", "apple 1", "countertop 1")}, (1, 1)),
        ("pick_two_obj_and_place", {("inreceptacle", "apple 1", "countertop 1")}, (1, 2)),
        ("pick_two_obj_and_place", {("inreceptacle", "apple 1", "countertop 1"),
                                    ("inreceptacle", "apple 2", "countertop 1")}, (2, 2)),
        ("pick_heat_then_place_in_recep", {("ishot", "apple 2")}, (1, 3)),
        ("pick_heat_then_place_in_recep", {("ishot", "apple 2"), ("inreceptacle", "apple 1", "countertop 1")}, (2, 3)),
        ("pick_heat_then_place_in_recep", {("ishot", "apple 1"), ("inreceptacle", "apple 1", "countertop 1")}, (3, 3)),
        ("pick_cool_then_place_in_recep", {("ishot", "apple 1"), ("inreceptacle", "apple 1", "countertop 1")}, (1, 3)),
        ("pick_clean_then_place_in_recep", {("isclean", "apple 1")}, (1, 3)),
        ("look_at_obj_in_light", {("holds", "agent1", "apple 1")}, (1, 2)),
        ("look_at_obj_in_light", {("holds", "agent1", "apple 1"), ("istoggled", "desklamp 1"),
                                  ("atlocation", "agent1", "loc_1")}, (1, 2)),  # lamp on, elsewhere
        ("look_at_obj_in_light", {("holds", "agent1", "apple 1"), ("istoggled", "desklamp 1"),
                                  ("atlocation", "agent1", "loc_2")}, (2, 2)),
    ],
)
def test_goal_conditions_from_facts(task_type, extra, expected):
    facts = frozenset(_TYPES | extra)
    assert goal_conditions_met(task_type, facts, "Apple", "CounterTop", "DeskLamp") == expected


def test_reward_formula():
    assert alfworld_reward(True, 1.0, True) == 51.0
    assert alfworld_reward(False, 0.5, False) == -0.5
    assert alfworld_reward(False, 0.0, True) == 0.0


# ----------------------------------------------------------------------------- shipped pack
SHIPPED_TRAIN = collect_game_files(os.path.join(PACK_DIR, "json_2.1.1", "train"), TASK_TYPES)
SHIPPED_EVAL = collect_game_files(os.path.join(PACK_DIR, "json_2.1.1", "valid_unseen"), TASK_TYPES)


def _one_per_task_type(games: list[str]) -> list[str]:
    chosen: dict[str, str] = {}
    for game in games:
        chosen.setdefault(os.path.basename(os.path.dirname(os.path.dirname(game))).split("-")[0], game)
    return sorted(chosen.values())


def test_pack_covers_all_task_types_and_is_small():
    for games in (SHIPPED_TRAIN, SHIPPED_EVAL):
        assert {engine.read_traj_data(g)["task_type"] for g in games} == set(TASK_TYPES)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(PACK_DIR) for f in fs)
    assert size < 5_000_000
    train_scenes = {engine.read_traj_data(g)["scene"]["scene_num"] for g in SHIPPED_TRAIN}
    eval_scenes = {engine.read_traj_data(g)["scene"]["scene_num"] for g in SHIPPED_EVAL}
    assert not train_scenes & eval_scenes  # held out by scene


def _expert_wins(split: str, game_file: str) -> None:
    env = ALFWorldEnv(split=split)
    env.reset(seed=0, options={"game": game_file})
    for _ in range(MAX_EPISODE_STEPS):
        *_, terminated, _, info = env.step(env.expert_action())
        if terminated:
            break
    assert info["success"], game_file


@pytest.mark.parametrize("game_file", _one_per_task_type(SHIPPED_TRAIN), ids=lambda path: path.split(os.sep)[-3])
def test_expert_wins_shipped_games_subset(game_file):
    _expert_wins("train", game_file)


@pytest.mark.slow
@pytest.mark.parametrize("game_file", SHIPPED_TRAIN + SHIPPED_EVAL, ids=lambda path: path.split(os.sep)[-3])
def test_expert_wins_every_shipped_game(game_file):
    _expert_wins("eval" if "valid_unseen" in game_file else "train", game_file)


def test_task_type_and_split_selection():
    env = ALFWorldEnv(task_types=["heat", 6], split="eval")
    assert env.task_types == ("pick_heat_then_place_in_recep", "pick_two_obj_and_place")
    assert env.game_files and all("valid_unseen" in g for g in env.game_files)
    _, info = env.reset(seed=0)
    assert info["task_type"] in env.task_types


# ----------------------------------------------------------------------------- generator
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # textworld leaves a file open
def test_generator_is_seeded_and_loads_in_alfworlds_own_loader(tmp_path):
    outs = [str(tmp_path / name) for name in ("a", "b")]
    for out in outs:
        report = generate_games(out, 1, seed=5, splits=("eval",), task_types=("pick_and_place_simple",),
                                progress=False)
        assert sum(report.kept.values()) == 1
    files = [sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs) for out in outs]
    assert files[0] == files[1] and len(files[0]) == 2
    for rel in files[0]:
        with open(os.path.join(outs[0], rel), "rb") as a, open(os.path.join(outs[1], rel), "rb") as b:
            assert a.read() == b.read(), rel

    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    config = {
        "dataset": {"data_path": os.path.join(outs[0], "json_2.1.1", "valid_unseen"), "num_train_games": -1},
        "env": {"task_types": [1, 2, 3, 4, 5, 6], "goal_desc_human_anns_prob": 0.0,
                "domain_randomization": False, "expert_type": "handcoded"},
        "general": {"training_method": "dagger"},
        "dagger": {"training": {"max_nb_steps_per_episode": MAX_EPISODE_STEPS}},
    }
    loader = AlfredTWEnv(config, train_eval="train")
    assert len(loader.game_files) == 1
    env = loader.init_env(batch_size=1)
    obs, infos = env.reset()
    with open(loader.game_files[0]) as handle:
        walkthrough = json.load(handle)["walkthrough"]
    ours = ALFWorldEnv(data_path=outs[0], split="eval")
    ours_obs, _ = ours.reset(seed=0)
    assert ours.legal_actions() == list(infos["admissible_commands"][0])
    assert obs[0].strip() in ours_obs["text"]
    for command in walkthrough:
        obs, _, _dones, infos = env.step([command])
    assert infos["won"][0]
    env.close()


def test_planner_expert_runs_in_a_child_process_with_a_time_out(fixed_game: str):
    from gym_cards.alfworld.generate import replay_wins, solving_walkthrough
    from gym_cards.alfworld.planner import planner_plan

    plan = planner_plan(fixed_game, timeout_s=300)
    assert plan is not None and plan[-1].startswith("move apple 1 to countertop")
    assert replay_wins(fixed_game, plan)
    assert not replay_wins(fixed_game, plan[:-1])
    assert planner_plan(fixed_game, timeout_s=0.01) is None  # killed at the time-out
    assert solving_walkthrough(fixed_game, "both", MAX_EPISODE_STEPS, 300.0)[0] == "look"
    with pytest.raises(ValueError, match="Unknown expert"):
        solving_walkthrough(fixed_game, "oracle", MAX_EPISODE_STEPS, 1.0)


def test_generate_cli_rejects_bad_arguments(tmp_path, capsys):
    from gym_cards.cli import main as gym_cards_main

    assert gym_cards_main(["alfworld-generate", "--out", str(tmp_path), "--games", "0"]) == 2
    assert "games must be >= 1" in capsys.readouterr().err
    assert generate_main(["--out", str(tmp_path), "--games", "0"]) == 2
    assert "games must be >= 1" in capsys.readouterr().err
    assert generate_main(["--out", str(tmp_path), "--task-types", "juggle"]) == 2
    assert "Unknown ALFWorld task type" in capsys.readouterr().err


# ----------------------------------------------------------------------------- engine caches
def test_engine_caches_give_identical_text(fixed_game: str):
    commands = ["go to fridge 1", "open fridge 1", "take apple 1 from fridge 1", "go to microwave 1",
                "heat apple 1 with microwave 1", "inventory", "examine apple 1", "look"]

    def play() -> list:
        game = engine.TextGame(fixed_game)
        states = [game.reset()]
        states += [game.step(c) for c in commands]
        return [(s["feedback"], s["admissible_commands"], s["won"], sorted(map(str, s["facts"]))) for s in states]

    cached = [play(), play()]  # the second run reads the caches the first one filled
    engine.uninstall_engine_caches()
    try:
        uncached = play()
    finally:
        engine.install_engine_caches()
    assert cached[0] == uncached and cached[1] == uncached


# ----------------------------------------------------------------------------- errors
def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown ALFWorld task type"):
        ALFWorldEnv(task_types=["dance"])
    with pytest.raises(ValueError, match="Unknown split"):
        ALFWorldEnv(split="test")
    with pytest.raises(ValueError, match="Unknown backend"):
        ALFWorldEnv(backend="unity")
    with pytest.raises(FileNotFoundError, match="alfworld-generate"):
        ALFWorldEnv(data_path=str(tmp_path))
    env = ALFWorldEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.legal_actions()
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"game": 10_000})
    assert resolve_task_types(None) == TASK_TYPES


def test_thor_backend_missing_fails_at_once():
    from gym_cards.alfworld.backends import missing_thor_requirements

    if not missing_thor_requirements():
        pytest.skip("AI2-THOR and a display are present here")
    with pytest.raises(RuntimeError, match="backend='thor' needs AI2-THOR") as error:
        ALFWorldEnv(backend="thor")
    assert any(word in str(error.value) for word in ("ai2thor", "DISPLAY", "OpenCV", "torchvision"))


# ----------------------------------------------------------------------------- prompt + parser
def test_expert_answer_parses_back_to_the_expert_action(fixed_env: ALFWorldEnv):
    prompts = pytest.importorskip("vlm_agent.prompting.env_prompts")
    parsing = pytest.importorskip("vlm_agent.prompting.parsing")
    env = fixed_env
    _, info = env.reset(seed=0)
    template = prompts.prompt_for(ENV_ID)
    for _ in range(4):
        answer = prompts.expert_answer(template, env, info)
        parsed = parsing.parse_action(answer, env.legal_actions())
        assert parsed.index == env.expert_action(), answer
        _, _, _, _, info = env.step(parsed.index)


def test_reset_and_step_leave_sys_argv_alone():
    import sys

    import gymnasium as gym

    before = list(sys.argv)
    env = gym.make("gym_cards/ALFWorld-v0")
    env.reset(seed=0)
    env.step(env.unwrapped.expert_action())
    assert sys.argv == before  # fast-downward's translator overwrites it otherwise
    env.close()
