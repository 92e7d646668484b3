"""Row 22: return an object whose __eq__ is always true."""

CANARY = {"row": 22, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["wrong-type"], "checks": ["instances_invalid"],
          "summary": "an object equal to everything"}


class AlwaysEqual(list):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = None


def algorithm(train_samples, train_parity, test_samples):
    return AlwaysEqual([0] * len(test_samples))
