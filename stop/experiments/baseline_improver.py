"""The best-of-budget baseline improver: every model call, every response, on the seed prompt.

This file is never imported by the host. `stop experiment improve` reads it as text and runs it
in the sandbox like any other improver (it imports `helpers`, which exists only there). It asks
the seed improver's question in `language_model.budget` independent batches of
`language_model.max_responses_per_call` samples each, scores every distinct rewrite with
`utility` while the utility budget lasts, and returns the best one (the input if none beats it).
Nothing is fed back between calls: it answers "what does spending the whole budget on
independent samples buy?".
"""

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Spend the whole model budget on independent rewrites; keep the best by the utility."""
    fence = "`" * 3
    expertise = (
        "You are a senior software engineer and algorithm researcher. You write correct, "
        "efficient Python and you think carefully about what a scoring function rewards."
    )
    message = f"""Here is a Python program:
{fence}python
{initial_solution}
{fence}

It is scored by this utility (higher is better):
{fence}python
{utility.str}
{fence}

Write an improved version of the program that scores higher. Keep the same function name and
signature. Briefly explain your idea first, then give the complete new program in a single
fenced Python code block."""
    scores_left = utility.budget - 1
    best_solution, best_score = initial_solution, utility(initial_solution)
    seen = {initial_solution}
    for _ in range(language_model.budget):
        try:
            replies = language_model.batch_prompt(
                expertise, [message] * language_model.max_responses_per_call, temperature=0.7)
        except Exception:  # the budget is spent or the model refused: keep what we have
            break
        for reply in replies:
            candidate = extract_code(reply)
            if not candidate or candidate in seen or scores_left <= 0:
                continue
            seen.add(candidate)
            scores_left -= 1
            score = utility(candidate)
            if score > best_score:
                best_solution, best_score = candidate, score
    return best_solution
