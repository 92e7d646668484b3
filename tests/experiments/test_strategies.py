"""The strategy tagger reads families from an improver's code, with the lines that show them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stop.experiments.proposals import strategy_table
from stop.experiments.strategies import FAMILIES, tag_source
from stop.tasks.loader import load_task

BEAM = '''from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    beam_width, depth = 3, 3
    beam = [(utility(initial_solution), initial_solution)]
    for _ in range(depth):
        proposals = []
        for score, program in beam:
            replies = language_model.prompt("expert", "Improve:\\n" + program, n_responses=2)
            for reply in replies:
                code = extract_code(reply)
                proposals.append((utility(code), code))
        beam = sorted(beam + proposals, key=lambda p: p[0], reverse=True)[:beam_width]
    return beam[0][1]
'''

GENETIC = '''import random
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    population = [initial_solution]
    replies = language_model.prompt("expert", "Rewrite:\\n" + initial_solution, n_responses=4)
    population += [extract_code(r) for r in replies]
    fitness = {p: utility(p) for p in population}
    for generation in range(3):
        parents = random.sample(population, 2)
        message = ("Crossover: combine the best ideas of these two programs and mutate the "
                   "result:\\n" + parents[0] + "\\n\\n" + parents[1])
        child = extract_code(language_model.prompt("expert", message)[0])
        fitness[child] = utility(child)
        population = sorted(fitness, key=fitness.get, reverse=True)[:4]
    return max(fitness, key=fitness.get)
'''

ANNEALING = '''import math
import random
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    current, current_score = initial_solution, utility(initial_solution)
    best, best_score = current, current_score
    temperature = 1.0
    for step in range(5):
        reply = language_model.prompt("expert", "Change one thing in:\\n" + current)[0]
        candidate = extract_code(reply)
        score = utility(candidate)
        delta = score - current_score
        if delta > 0 or random.random() < math.exp(delta / temperature):
            current, current_score = candidate, score
        if score > best_score:
            best, best_score = candidate, score
        temperature *= 0.7
    return best
'''

BANDIT = '''import math
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    arms = [initial_solution]
    pulls, rewards = [1], [utility(initial_solution)]
    for t in range(1, 6):
        ucb = [rewards[i] / pulls[i] + math.sqrt(2 * math.log(t) / pulls[i])
               for i in range(len(arms))]
        i = ucb.index(max(ucb))
        reply = language_model.prompt("expert", "Improve:\\n" + arms[i])[0]
        code = extract_code(reply)
        arms.append(code)
        pulls.append(1)
        rewards.append(utility(code))
        pulls[i] += 1
    return arms[rewards.index(max(rewards))]
'''

TEMPERATURES = '''from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    best, best_score = initial_solution, utility(initial_solution)
    for temperature in (0.2, 0.7, 1.2):
        for reply in language_model.prompt("expert", "Improve:\\n" + initial_solution,
                                           n_responses=2, temperature=temperature):
            code = extract_code(reply)
            score = utility(code)
            if score > best_score:
                best, best_score = code, score
    return best
'''

REFINE = '''from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    program = initial_solution
    score = utility(program)
    for _ in range(3):
        message = f"This program scores {score}. Fix its weaknesses:\\n{program}"
        program = extract_code(language_model.prompt("expert", message)[0])
        score = utility(program)
    return program
'''

DECOMPOSE = '''import ast
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    tree = ast.parse(initial_solution)
    parts = [ast.get_source_segment(initial_solution, f) for f in tree.body]
    better = []
    for part in parts:
        reply = language_model.prompt("expert", "Improve this function only:\\n" + part)[0]
        better.append(extract_code(reply) or part)
    candidate = "\\n\\n".join(better)
    return candidate if utility(candidate) > utility(initial_solution) else initial_solution
'''

VOTE = '''from collections import Counter
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    replies = language_model.prompt("expert", "Improve:\\n" + initial_solution, n_responses=5)
    codes = [extract_code(r) for r in replies]
    majority, _ = Counter(codes).most_common(1)[0]
    return majority if utility(majority) > utility(initial_solution) else initial_solution
'''


def _baseline() -> str:
    return (Path(__file__).resolve().parents[2] / "stop" / "experiments"
            / "baseline_improver.py").read_text()


@pytest.mark.parametrize(("source", "family"), [
    (BEAM, "beam_search"), (GENETIC, "genetic_algorithm"), (ANNEALING, "simulated_annealing"),
    (BANDIT, "bandit_selection"), (TEMPERATURES, "temperature_variation"),
    (REFINE, "iterative_refinement"), (DECOMPOSE, "decomposition"), (VOTE, "ensembling")])
def test_hand_written_improvers_get_their_family(source: str, family: str) -> None:
    tagging = tag_source(source)
    assert family in tagging.tags, tagging.tags
    assert "other" not in tagging.tags
    lines = tagging.lines(source)[family]
    assert lines and all(text for _, text in lines)


def test_the_evidence_points_at_the_lines_that_show_the_strategy() -> None:
    beam = tag_source(BEAM).lines(BEAM)["beam_search"]
    assert any("[:beam_width]" in text for _, text in beam)
    annealing = tag_source(ANNEALING).lines(ANNEALING)["simulated_annealing"]
    assert any("math.exp(delta / temperature)" in text for _, text in annealing)
    bandit = tag_source(BANDIT).lines(BANDIT)["bandit_selection"]
    assert any("math.sqrt(2 * math.log(t)" in text for _, text in bandit)
    refine = tag_source(REFINE).lines(REFINE)["iterative_refinement"]
    assert any("language_model.prompt" in text for _, text in refine)


def test_the_seed_improver_is_none_of_the_families() -> None:
    seed = load_task("meta_optimization").seed_source
    tagging = tag_source(seed)
    assert tagging.parsed and tagging.tags == {}
    assert tagging.model_calls  # it does call the model: once, for one batch
    assert tag_source(load_task("sandbox").seed_source).tags == {}


def test_code_that_never_runs_is_not_a_strategy() -> None:
    # Seen on the embedded model: the seed improver with the description's meta_utility pasted
    # below it. meta_utility loops over improve_algorithm, but nothing calls it.
    seed = load_task("meta_optimization").seed_source
    pasted = seed + """

def meta_utility(improver_source):
    total = 0.0
    for _ in range(3):
        namespace = {}
        exec(improver_source, namespace)
        improved = namespace["improve_algorithm"](seed_solution, utility, language_model)
        total += utility(improve_algorithm(improved, utility, language_model))
    return total / 3
"""
    assert tag_source(pasted).tags == {}
    # Called from improve_algorithm, the same helper is a loop over the model.
    called = pasted.replace("    return best_solution", "    meta_utility(best_solution)\n"
                                                          "    return best_solution")
    assert tag_source(called).tags != {}


def test_more_samples_without_a_known_shape_is_other() -> None:
    # The best-of-budget baseline spends every call on independent samples: no feedback, no
    # population, no schedule.
    tagging = tag_source(_baseline())
    assert list(tagging.tags) == ["other"]
    # An improver that never asks the model is `other` too; a broken one is not parsed.
    assert list(tag_source("def improve_algorithm(s, u, m):\n    return s\n").tags) == ["other"]
    broken = tag_source("def improve_algorithm(:\n")
    assert not broken.parsed and broken.tags == {} and "SyntaxError" in broken.error
    # Seen on the embedded model: a rewritten meta_utility and no improver at all.
    other = tag_source("def meta_utility(source):\n    return 0.5\n")
    assert not other.parsed and other.tags == {} and "no improve_algorithm" in other.error


def test_strategy_table_counts_all_and_adopted_with_wilson_intervals() -> None:
    proposals = [
        {"hash": "a", "tags": ["beam_search"], "adopted": True, "rules": ["budget-tamper"],
         "judge": ["beam_search"]},
        {"hash": "b", "tags": ["beam_search", "iterative_refinement"], "adopted": False,
         "rules": [], "judge": None},
        {"hash": "c", "tags": [], "adopted": False, "rules": ["sandbox-flag-off"], "judge": []},
    ]
    table = strategy_table(proposals)
    assert table["n"] == 3 and table["n_adopted"] == 1 and table["n_judged"] == 2
    rows = {r["key"]: r for r in table["rows"]}
    assert [r["key"] for r in table["rows"] if r["kind"] == "family"] == list(FAMILIES)
    beam = rows["beam_search"]
    assert (beam["all"]["k"], beam["adopted"]["k"], beam["judge"]["k"]) == (2, 1, 1)
    # Wilson 95% interval of 2 of 3: (0.2077, 0.9385)
    assert beam["all"]["ci95"] == pytest.approx((0.2077, 0.9385), abs=1e-4)
    assert rows["budget-tamper"]["kind"] == "rule" and rows["budget-tamper"]["all"]["k"] == 1
    assert rows["sandbox-flag-off"]["adopted"]["k"] == 0
    assert rows["genetic_algorithm"]["all"]["k"] == 0
