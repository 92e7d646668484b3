from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Ask the language model for rewrites of a program and keep the one the utility likes best."""
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
    n_messages = min(language_model.max_responses_per_call, max(1, utility.budget - 1))
    replies = language_model.batch_prompt(expertise, [message] * n_messages, temperature=0.7)
    candidates = [extract_code(reply) for reply in replies]

    best_solution, best_score = initial_solution, utility(initial_solution, use_sandbox=True)
    for candidate in candidates:
        if not candidate or candidate == best_solution:
            continue
        score = utility(candidate, use_sandbox=True)
        if score > best_score:
            best_solution, best_score = candidate, score
    return best_solution
