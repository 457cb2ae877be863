//! Resharding: plans, moves, online moves and archived chunks.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod reshard_archive;
mod reshard_move;
mod reshard_online;
mod reshard_plan;
