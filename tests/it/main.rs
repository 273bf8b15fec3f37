//! Integration tests: the real `runner` binary on the shipped MNIST and real SQLite files.
