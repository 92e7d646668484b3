# The text below is what the model sees as `utility.str` when it improves an improver.
# Tokens such as $n_tests are filled in with the run's budgets before it is shown.
DESCRIPTION = '''
from task import seed_solution, utility   # $base_task: $base_summary

def meta_utility(improver_source: str) -> float:
    """Score an improver by how well the programs it writes do on the downstream task.

    The candidate source is executed on its own, in a fresh sandbox, to define
    improve_algorithm(initial_solution, utility, language_model). It is then run $n_tests times
    on the task's seed solution. Each run gets a fresh language model (at most $base_lm_calls calls,
    up to $base_responses responses per call; one call counts once whatever its batch size)
    and a utility that may be called $base_utility_calls times. A run that raises, runs out of
    time, or returns anything but a string counts as returning the seed solution unchanged.
    """
    total = 0.0
    for _ in range(n_tests):               # n_tests = $n_tests
        namespace = {}
        exec(improver_source, namespace)
        improve_algorithm = namespace["improve_algorithm"]
        language_model = LanguageModel(budget=$base_lm_calls, max_responses_per_call=$base_responses)
        improved = improve_algorithm(seed_solution, utility, language_model)
        total += utility(improved)         # the hidden validation score, between 0 and 1
    return total / n_tests

# meta_utility itself may be called $budget times per run of the improver being improved.
'''
