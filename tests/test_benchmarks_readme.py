"""benchmarks/make_readme.py: the README is assembled from result files, missing ones are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import make_readme
from benchmarks.make_readme import SECTIONS, BenchmarkSection, assemble_readme, demote_headings, machine_description

FIXTURE_SECTIONS = (
    BenchmarkSection("alpha_speed", "Alpha speed", "Steps per second of alpha.", "python -m benchmarks.alpha_speed"),
    BenchmarkSection("beta_learning", "Beta learning", "Success of beta.", "python -m benchmarks.beta_learning --x 1"),
)


def write_fixture_results(results_dir: Path) -> None:
    """Results for alpha (md + csv + png) only; beta is missing."""
    results_dir.mkdir(parents=True)
    (results_dir / "alpha_speed.md").write_text(
        "# Alpha table\n\n| n | steps/s |\n|---|---:|\n| 1 | 123.4 |\n\n```\n# not a heading\n```\n"
        "\nMachine: 2 CPU cores, torch 9.9\n"
    )
    (results_dir / "alpha_speed.csv").write_text("n,steps_per_s\n1,123.4\n")
    (results_dir / "alpha_speed.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (results_dir / "alpha_speed_curves.csv").write_text("step,x\n")  # a side file: not a section


def test_assemble_embeds_present_results_and_names_missing(tmp_path: Path) -> None:
    results_dir = tmp_path / "benchmarks" / "results"
    write_fixture_results(results_dir)
    text, missing = assemble_readme(FIXTURE_SECTIONS, results_dir, tmp_path / "benchmarks" / "README.md")

    assert missing == ["beta_learning"]
    alpha, beta = text.split("## Beta learning")
    assert "## Alpha speed" in alpha and "Steps per second of alpha." in alpha
    assert "python -m benchmarks.alpha_speed" in alpha
    assert "| 1 | 123.4 |" in alpha  # the table is embedded verbatim
    assert "### Alpha table" in alpha  # its heading sits below the section heading
    assert "\n# not a heading" in alpha  # code blocks are left alone
    assert "Machine: 2 CPU cores, torch 9.9" in alpha
    assert "![Alpha speed](results/alpha_speed.png)" in alpha  # path relative to the README
    assert "(results/alpha_speed.csv)" in alpha
    assert "No results yet" in beta and "`python -m benchmarks.beta_learning --x 1`" in beta
    assert "No results yet" not in alpha
    assert "- [Beta learning](#beta-learning)" in text
    assert "Other results" not in text


def test_result_files_without_a_section_are_listed_under_other_results(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    write_fixture_results(results_dir)
    (results_dir / "alpha_speed_rerun.md").write_text("# Rerun\n\n| n |\n|---|\n| 7 |\n")
    text, missing = assemble_readme(FIXTURE_SECTIONS, results_dir, tmp_path / "README.md")
    assert missing == ["beta_learning"]
    other = text.split("## Other results", 1)[1]
    assert "### alpha_speed_rerun" in other and "#### Rerun" in other and "| 7 |" in other
    assert "alpha_speed_curves" not in text


def test_main_writes_readme_and_check_detects_staleness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results_dir = tmp_path / "results"
    write_fixture_results(results_dir)
    readme = tmp_path / "README.md"
    monkeypatch.setattr(make_readme, "SECTIONS", FIXTURE_SECTIONS)

    assert make_readme.main(["--results-dir", str(results_dir), "--output", str(readme)]) == 0
    out = capsys.readouterr().out
    assert "missing results for beta_learning: run `python -m benchmarks.beta_learning --x 1`" in out
    assert "| 1 | 123.4 |" in readme.read_text()

    assert make_readme.main(["--results-dir", str(results_dir), "--output", str(readme), "--check"]) == 0
    (results_dir / "beta_learning.md").write_text("| a |\n|---|\n| 1 |\n")
    assert make_readme.main(["--results-dir", str(results_dir), "--output", str(readme), "--check"]) == 1


def test_main_rejects_missing_results_dir(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        make_readme.main(["--results-dir", str(tmp_path / "nope"), "--output", str(tmp_path / "R.md")])


def test_demote_headings() -> None:
    assert demote_headings("# A\ntext #1\n###### deep", 2) == "### A\ntext #1\n###### deep"


def test_sections_cover_every_benchmark_once() -> None:
    names = [s.name for s in SECTIONS]
    assert len(names) == len(set(names))
    expected = {"env_throughput", "rollout_throughput", "cnn_rl_baseline", "ppo_learning", "prompting_baselines"}
    assert expected <= set(names)
    assert all(s.command.startswith("python -m benchmarks.") for s in SECTIONS)


def test_machine_description_names_cpus_and_torch() -> None:
    line = machine_description()
    assert "CPU cores" in line and "torch " in line
