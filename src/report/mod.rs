//! Reports over the store for people and other tools: the comparison of a sweep's configurations
//! ([`compare`], with the statistics of [`stats`]), two runs side by side ([`diff`]), where a run errs ([`errors`]), which parameters matter ([`importance`]), what a search decided ([`rungs`]), plots ([`plot`]), safetensors export ([`export`]) and predictions ([`predict`]), and
//! the rendering of tables as aligned text, CSV or JSON, streamed ([`table`]).
//!
//! Reads the store through `store`'s checked reads; must not import `sweep` or the binary's code, and
//! never writes to the store.

pub mod compare;
pub mod diff;
pub mod errors;
pub mod export;
pub mod importance;
pub mod plot;
pub mod predict;
pub mod rungs;
pub mod stats;
pub mod table;
pub mod ui;
