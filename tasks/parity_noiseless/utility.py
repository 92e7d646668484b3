DESCRIPTION = """
Task: learning a parity function.

Write a Python function

    def algorithm(train_samples, train_parity, test_samples):
        ...
        return predictions

A hidden subset of 10 bit positions is chosen at random (each position is in it with
probability 0.3). Every sample is a vector of 10 random bits; its label is the parity (sum
modulo 2) of the sample's bits at the hidden positions.

Inputs (numpy integer arrays of 0s and 1s):
- train_samples: shape (100, 10), the training samples.
- train_parity: shape (100,), their labels (all correct).
- test_samples: shape (20, 10), samples whose labels you must predict.

Output: predictions for the 20 test samples, in order: a list, tuple or numpy array of
exactly 20 values, each 0 or 1. Any other type, length or shape scores 0 for that problem.

Scoring: the fraction of correct predictions, averaged over a fixed hidden set of problems.
Each call of algorithm must finish within 2 seconds; a call that is too slow or raises an
exception scores 0 for that problem only. numpy and the Python standard library are
available; there is no network and no file access outside /tmp.

Budget: the utility (this scorer) may be called at most 25 times per improvement run.
"""
