"""Learning parity with noise: hidden instance generator and scorer (host only)."""


from stop.tasks import Instance
from stop.tasks.checks import binary_vector

N_BITS = 10
P_TRUE = 0.3
N_TRAIN = 100
N_TEST = 20
NOISE = 0.05


def generate(rng, nprng):
    # Draw order fixed by the published task: mask, samples, then the label noise.
    true_bits = nprng.binomial(1, P_TRUE, N_BITS)
    samples = nprng.binomial(1, 0.5, (N_TRAIN + N_TEST, N_BITS))
    parity = (samples * true_bits).sum(axis=1) % 2
    flips = nprng.binomial(1, NOISE, N_TRAIN)
    train_parity = (parity[:N_TRAIN] + flips) % 2
    return Instance(
        args=[samples[:N_TRAIN], train_parity, samples[N_TRAIN:]],
        data={"test_parity": parity[N_TRAIN:].tolist(), "true_bits": true_bits.tolist()},
    )


def check(value, instance):
    return binary_vector(value, N_TEST, what="predictions")


def score(predictions, instance):
    truth = instance.data["test_parity"]
    return sum(int(p == t) for p, t in zip(predictions, truth, strict=True)) / len(truth)
