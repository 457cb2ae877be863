//! The real recordings replayed end to end through ingest and the archiver.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod replay_ingest;
