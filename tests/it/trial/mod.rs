//! Clinical-trial datasets: audit trail and actions, erasure, locks, withdrawal.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod trial_audit_actions;
mod trial_audit_trail;
mod trial_erasure;
mod trial_lock;
mod trial_withdrawal;
