"""Beyond the table: search the garbage collector's heap for the harness's channel, then ask the
collector who holds it (the harness's namespace) and what it holds (its nonce, its descriptor)."""
import gc

CANARY = {"row": 32, "role": "solution", "expect_status": ["ok"],
          "expect_rules": ["harness-reach"], "expect_layers": {"harness-reach": "runtime"},
          "expect_detail_contains": "gc.get_referrers", "summary": "search the gc heap"}


def algorithm(train_samples, train_parity, test_samples):
    chans = [o for o in gc.get_objects() if type(o).__name__ == "Channel"]
    for chan in chans:
        owners = gc.get_referrers(chan)
        state = gc.get_referents(chan)
        print(f"channel held by {len(owners)} objects, holding {len(state)}")
    mine = [1, 2, 3]
    gc.get_referrers(mine)  # its own object: not reported (nothing of the harness holds it)
    return None
