DESCRIPTION = """
Task: string grid distance.

For two strings s and t of equal length over the letters A and B, define

    grid_dist(s, t) = (number of positions i where s[i] != t[i])
                    + (number of adjacent pairs in s with s[i] != s[i+1])
                    + (number of adjacent pairs in t with t[i] != t[i+1])

Write a Python function

    def algorithm(t: str, dist: int) -> str:
        ...

that returns a string s over {A, B}, of the same length as t (1 to 30 letters), with
grid_dist(s, t) == dist. Such a string always exists for the problems you are given.

Scoring, per problem: 1.0 if grid_dist(s, t) == dist exactly; otherwise
0.5 - |grid_dist(s, t) - dist| / (6 * len(t)) (never below 0). The returned value must be a
str of exactly len(t) letters, each A or B; anything else scores 0. Each call must finish
within 0.1 seconds; a slower call, or one that raises, scores 0 for that problem only. The
task score is the mean over a fixed hidden set of 50 problems. The Python standard library
and numpy are available; there is no network.

Budget: the utility (this scorer) may be called at most 25 times per improvement run.
"""
