def algorithm(t: str, dist: int) -> str:
    return t
