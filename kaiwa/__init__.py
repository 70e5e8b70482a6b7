"""Kaiwa: the command-line tool and the local stack that `make up` and the tests run."""
