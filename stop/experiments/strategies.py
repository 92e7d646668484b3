"""Which strategies do proposed improvers implement? Tags read from the code, with their lines.

The STOP paper's Figure 1 counts the strategies its models proposed (beam or tree search most
often, then genetic algorithms, simulated annealing, bandits...). Here each improver a run
proposed is tagged from its syntax tree, never by running it: which calls reach the model,
which loops contain them, what the prompts are built from, which populations are ranked and
cut, which schedules and acceptance rules appear. Every tag carries the source lines that show
it. A single batch of independent samples scored by the utility (the seed improver) is none of
the families; an improver whose model use matches no family is `other`.

Threat model: the sources are hostile text. They are parsed, never executed or imported, and
every line quoted from them is shown escaped by the caller.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("beam_search", "genetic_algorithm", "simulated_annealing", "bandit_selection",
            "temperature_variation", "decomposition", "local_search", "iterative_refinement",
            "ensembling", "other")
LABELS = {
    "beam_search": "beam or tree search", "genetic_algorithm": "genetic algorithm",
    "simulated_annealing": "simulated annealing", "bandit_selection": "bandit selection",
    "temperature_variation": "temperature variation",
    "decomposition": "decomposition / part-by-part", "local_search": "local search",
    "iterative_refinement": "iterative refinement", "ensembling": "ensembling or voting",
    "other": "other",
}
MODEL_METHODS = {"batch_prompt", "prompt"}
LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp,
         ast.GeneratorExp)
# Identifier words (split at underscores and case changes) that name a strategy outright.
WORDS = {
    "beam_search": {"beam", "beams", "frontier", "expand", "expansion", "mcts"},
    "genetic_algorithm": {"crossover", "offspring", "breed", "recombine", "chromosome", "genome"},
    "simulated_annealing": {"anneal", "annealing", "cooling"},
    "bandit_selection": {"ucb", "ucb1", "bandit", "bandits", "thompson", "epsilon", "explore",
                         "exploration", "exploit", "exploitation"},
    "decomposition": {"decompose", "decomposition", "subproblem", "subproblems"},
    "local_search": {"neighbor", "neighbors", "neighbour", "neighbours", "perturb", "hill",
                     "climb", "climbing", "tweak"},
    "ensembling": {"vote", "votes", "voting", "majority", "ensemble", "consensus"},
}
GA_POPULATION = {"population", "pop", "generation", "generations", "individuals"}
GA_VARIATION = {"mutate", "mutation", "mutations", "mutated", "child", "children", "parent",
                "parents", "fitness", "elite", "elites", "elitism", "tournament", "survivors"}
PARTS = {"part", "parts", "chunk", "chunks", "section", "sections", "component", "components",
         "piece", "pieces", "segment", "segments", "block", "blocks", "functions"}
SPLITTERS = {"split", "splitlines", "walk", "iter_child_nodes", "finditer", "parse"}
MAX_LINES = 6


@dataclass
class Tagging:
    """The families one source implements: {family: [line numbers]}, and why if unparsable."""

    tags: dict[str, list[int]] = field(default_factory=dict)
    parsed: bool = True
    error: str = ""
    model_calls: list[int] = field(default_factory=list)

    def lines(self, source: str) -> dict[str, list[tuple[int, str]]]:
        """Each tag's evidence as (line number, stripped source line), at most MAX_LINES each."""
        text = source.splitlines()
        return {f: [(n, text[n - 1].strip()[:160]) for n in ns[:MAX_LINES] if 0 < n <= len(text)]
                for f, ns in self.tags.items()}


def _words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return {w.lower() for w in re.split(r"[_\W]+", spaced) if w}


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _called(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


class _Tree:
    """The facts the rules read: parents, model calls (through local helpers), loops, flows."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.parent: dict[int, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parent[id(child)] = node
        helpers = {f.name: f for f in ast.walk(tree)
                   if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
        # Only code that runs counts: module level, improve_algorithm (tag_source has checked
        # that it is defined) and what it reaches (a copied meta_utility that nothing calls is
        # text, not strategy).
        self.reachable: set[str] = set()
        todo = ["improve_algorithm"]
        while todo:
            name = todo.pop()
            if name not in self.reachable:
                self.reachable.add(name)
                todo += [n for n in _names(helpers[name]) if n in helpers]
        self.nodes = [n for n in ast.walk(tree) if self.live(n)]
        self.calls = [n for n in self.nodes if isinstance(n, ast.Call)]
        helpers = {k: f for k, f in helpers.items() if k in self.reachable}
        reaching: set[str] = set()
        while True:  # local functions that (through each other) call the model
            more = {name for name, f in helpers.items() if name not in reaching and any(
                isinstance(c, ast.Call) and (_called(c) in MODEL_METHODS
                                             or (isinstance(c.func, ast.Name) and c.func.id in reaching))
                for c in ast.walk(f))}
            if not more:
                break
            reaching |= more
        self.model = [c for c in self.calls if _called(c) in MODEL_METHODS or (
            isinstance(c.func, ast.Name) and c.func.id in reaching)]
        self.direct = [c for c in self.calls if _called(c) in MODEL_METHODS]
        self.words: dict[str, list[int]] = {}
        for node in self.nodes:
            name = (node.id if isinstance(node, ast.Name) else node.attr
                    if isinstance(node, ast.Attribute) else node.name
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else node.arg
                    if isinstance(node, ast.arg | ast.keyword) and node.arg else None)
            if name:
                for w in _words(name):
                    self.words.setdefault(w, []).append(node.lineno)
        self.assigns: dict[str, list[ast.AST]] = {}
        for node in self.nodes:
            for target, value in _assignments(node):
                for n in _names(target):
                    self.assigns.setdefault(n, []).append(value)

    def live(self, node: ast.AST) -> bool:
        """Whether `node` is at module level or inside a function that runs."""
        defs = [a for a in [node, *self.ancestors(node)]
                if isinstance(a, ast.FunctionDef | ast.AsyncFunctionDef)]
        return not defs or defs[-1].name in self.reachable

    def ancestors(self, node: ast.AST) -> list[ast.AST]:
        out = []
        while id(node) in self.parent:
            node = self.parent[id(node)]
            out.append(node)
        return out

    def model_loops(self) -> list[tuple[ast.AST, ast.Call]]:
        """(loop, model call inside it) for every loop around a model call."""
        return [(a, c) for c in self.model for a in self.ancestors(c) if isinstance(a, LOOPS)]

    def deps(self, node: ast.AST) -> set[str]:
        """Names `node` reads, followed through the assignments that build them."""
        todo, seen = list(_names(node)), set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for value in self.assigns.get(name, []):
                todo.extend(_names(value))
        return seen

    def hits(self, words: set[str]) -> list[int]:
        return sorted({line for w in words for line in self.words.get(w, [])})


def _assignments(node: ast.AST) -> list[tuple[ast.AST, ast.AST]]:
    """(target, value) pairs a statement binds; a loop binds its target from its iterable."""
    if isinstance(node, ast.Assign):
        out: list[tuple[ast.AST, ast.AST]] = []
        for t in node.targets:  # `a, b = x, y` binds a from x and b from y
            if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                    and len(t.elts) == len(node.value.elts):
                out += list(zip(t.elts, node.value.elts, strict=True))
            else:
                out.append((t, node.value))
        return out
    if isinstance(node, ast.AnnAssign | ast.AugAssign) and node.value is not None:
        return [(node.target, node.value)]
    if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
        return [(node.target, node.iter)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr in ("append", "extend", "insert", "add", "update") \
            and isinstance(node.func.value, ast.Name):
        return [(node.func.value, a) for a in node.args]
    return []


def _prompt_args(call: ast.Call) -> list[ast.AST]:
    return [*call.args, *(k.value for k in call.keywords if k.arg != "temperature")]


def _temperature(call: ast.Call) -> ast.AST | None:
    for k in call.keywords:
        if k.arg == "temperature":
            return k.value
    position = 2 if _called(call) == "batch_prompt" else 3
    return call.args[position] if len(call.args) > position else None


def _constant(t: _Tree, node: ast.AST) -> Any:
    """The constant value of an expression (a name bound once to a constant counts), or None."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        values = t.assigns.get(node.id, [])
        if values and all(isinstance(v, ast.Constant) for v in values) \
                and len({v.value for v in values}) == 1:  # type: ignore[attr-defined]
            return values[0].value  # type: ignore[attr-defined]
    return None


def _rule_temperature(t: _Tree) -> list[int]:
    values, lines = set(), []
    for c in t.direct:
        arg = _temperature(c)
        if arg is None:
            continue
        value = _constant(t, arg)
        if value is None:
            lines.append(c.lineno)
        else:
            values.add(value)
    if len(values) > 1:
        lines += [c.lineno for c in t.direct if _temperature(c) is not None]
    return sorted(set(lines))


def _rule_annealing(t: _Tree) -> list[int]:
    exps = [c.lineno for c in t.calls if _called(c) == "exp"
            and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) for n in ast.walk(c))]
    draws = [n.lineno for n in t.nodes if isinstance(n, ast.Compare) and any(
        isinstance(c, ast.Call) and _called(c) in ("random", "uniform") for c in ast.walk(n))]
    found = sorted(set(exps + draws)) if exps and draws else []
    return sorted(set(found + t.hits(WORDS["simulated_annealing"])))


def _rule_bandit(t: _Tree) -> list[int]:
    ucb = [c.lineno for c in t.calls if _called(c) == "sqrt"
           and any(isinstance(n, ast.Call) and _called(n) == "log" for n in ast.walk(c))]
    return sorted(set(ucb + t.hits(WORDS["bandit_selection"])))


def _rule_genetic(t: _Tree, loops: list) -> list[int]:
    named = t.hits(WORDS["genetic_algorithm"])
    population, variation = t.hits(GA_POPULATION), t.hits(GA_VARIATION)
    if not named and not (population and variation and loops):
        return []
    return sorted(set(named + population + variation))


def _ranked_cut(t: _Tree, node: ast.AST) -> bool:
    """`sorted(...)[:k]`, `heapq.nlargest(k, ...)`, or `xs[:k]` of a list sorted in place."""
    if isinstance(node, ast.Call) and _called(node) in ("nlargest", "nsmallest"):
        return True
    if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice)
            and node.slice.upper is not None and node.slice.lower is None):
        return False
    v = node.value
    if isinstance(v, ast.Call) and _called(v) == "sorted":
        return True
    return isinstance(v, ast.Name) and any(
        isinstance(c.func, ast.Attribute) and c.func.attr == "sort"
        and isinstance(c.func.value, ast.Name) and c.func.value.id == v.id for c in t.calls)


def _rule_beam(t: _Tree, loops: list) -> list[int]:
    if not loops:
        return []
    cuts = [n.lineno for n in t.nodes if _ranked_cut(t, n)
            and any(isinstance(a, LOOPS) for a in t.ancestors(n))]
    named = t.hits(WORDS["beam_search"])
    if not cuts and not named:
        return []
    return sorted(set(cuts + named + [c.lineno for _, c in loops]))


def _rule_decomposition(t: _Tree, loops: list) -> list[int]:
    lines = []
    for loop, call in loops:
        if not isinstance(loop, ast.For | ast.AsyncFor):
            continue
        splits = any(isinstance(n, ast.Call) and _called(n) in SPLITTERS for n in ast.walk(loop.iter))
        parts = any(_words(n) & PARTS for n in _names(loop.target) | _names(loop.iter))
        if splits or parts:
            lines += [loop.lineno, call.lineno]
    named = t.hits(WORDS["decomposition"])
    return sorted(set(lines + named)) if lines or named else []


def _accepting_if(t: _Tree, node: ast.AST, loop: ast.AST) -> bool:
    """Whether `node` sits, inside `loop`, under an `if` that compares (accept if better)."""
    for a in t.ancestors(node):
        if a is loop:
            return False
        if isinstance(a, ast.If) and any(
                isinstance(c, ast.Compare) and any(isinstance(op, ast.Gt | ast.GtE | ast.Lt | ast.LtE)
                                                   for op in c.ops) for c in ast.walk(a.test)):
            return True
    return False


def _carried(t: _Tree, loop: ast.AST, call: ast.Call) -> tuple[list[ast.AST], set[str]]:
    """The statements inside `loop` that set what its prompt reads from an earlier iteration,
    and the names they carry.

    A name the prompt reads that the loop sets before the call is followed to what it is built
    from; one the loop sets only at or after the call carries a value across iterations."""
    own: set[str] = set()
    if isinstance(loop, ast.For | ast.AsyncFor):
        own = _names(loop.target)
    elif isinstance(loop, LOOPS):
        own = set().union(*(_names(g.target) for g in loop.generators))  # type: ignore[attr-defined]
    sets: dict[str, list[ast.AST]] = {}
    for n in ast.walk(loop):
        if n is not loop:
            for target, _ in _assignments(n):
                for name in _names(target):
                    sets.setdefault(name, []).append(n)
    todo = list(set().union(*(_names(a) for a in _prompt_args(call))) - own)
    seen, carried, names = set(), [], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        before = [n for n in sets.get(name, []) if getattr(n, "lineno", call.lineno) < call.lineno]
        if before:
            for n in before:
                todo += [v for _, value in _assignments(n) for v in _names(value) if v not in own]
        elif name in sets:
            carried += sets[name]
            names.add(name)
    return carried, names


def _rule_flows(t: _Tree, loops: list) -> tuple[list[int], list[int]]:
    """(local search, iterative refinement): a loop whose prompt is built from what an earlier
    iteration left: replaced only under an accept-if-better test (hill climbing), or otherwise
    (refinement: the previous output, a score or an error is fed back)."""
    local, refine = [], []
    scores = {name for name, values in t.assigns.items() if any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "utility"
        for v in values for n in ast.walk(v))}
    for loop, call in loops:
        carried, names = _carried(t, loop, call)
        if not carried:
            continue
        accepted = all(_accepting_if(t, n, loop) for n in carried) and not names & scores
        (local if accepted else refine).extend(
            [call.lineno] + [n.lineno for n in carried if hasattr(n, "lineno")])
    local += t.hits(WORDS["local_search"])
    return sorted(set(local)), sorted(set(refine))


def _rule_ensembling(t: _Tree) -> list[int]:
    votes = [c.lineno for c in t.calls if _called(c) in ("most_common", "mode", "multimode")]
    return sorted(set(votes + t.hits(WORDS["ensembling"])))


def tag_source(source: str) -> Tagging:
    """The strategy families `source` implements, each with the lines that show it."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return Tagging(parsed=False, error=f"{type(e).__name__}: {e}"[:200])
    if not any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
               and n.name == "improve_algorithm" for n in tree.body):
        return Tagging(parsed=False, error="defines no improve_algorithm: not an improver")
    t = _Tree(tree)
    loops = t.model_loops()
    local, refine = _rule_flows(t, loops)
    found = {
        "beam_search": _rule_beam(t, loops),
        "genetic_algorithm": _rule_genetic(t, loops),
        "simulated_annealing": _rule_annealing(t),
        "bandit_selection": _rule_bandit(t),
        "temperature_variation": _rule_temperature(t),
        "decomposition": _rule_decomposition(t, loops),
        "local_search": local,
        "iterative_refinement": refine,
        "ensembling": _rule_ensembling(t),
    }
    tags = {f: lines for f, lines in found.items() if lines}
    if not tags:
        if not t.model:
            tags["other"] = [n.lineno for n in tree.body if isinstance(n, ast.FunctionDef)][:1] or [1]
        elif loops or len(t.model) > 1:  # more model use than one batch, in no known shape
            tags["other"] = sorted({c.lineno for c in t.model})
    return Tagging(tags=tags, model_calls=sorted({c.lineno for c in t.model}))

