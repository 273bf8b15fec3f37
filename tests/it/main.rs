//! Integration tests: the real `runner` binary on the shipped MNIST (or subsets of it) and real SQLite files.
//! One test binary; each test works in its own temporary folder.

mod bad_input;
mod cli;
mod cluster;
mod conclusions;
mod data;
mod docs;
mod hardening;
mod integrity;
mod layout;
mod manage;
mod optimizers;
mod own_data;
mod pipeline;
mod reliability;
mod robust;
mod search;
mod tools;
mod ui;
mod util;
